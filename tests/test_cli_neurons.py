"""``stcsnn neurons`` and ``stcsnn --version``."""

from __future__ import annotations

import pytest

import stcsnn
from stcsnn.cli import main
from stcsnn.neurons import list_neurons

EXPECTED = ("if", "lif", "plif", "glif", "tclif", "lmh",
            "stc_lif", "stc_plif", "stc_lmh", "stc_glif", "stc_tclif")


def test_neurons_lists_every_registered_neuron(capsys):
    assert main(["neurons"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    listed = [line.split()[0] for line in lines]
    registered = [name for name, _ in list_neurons()]
    assert listed == registered
    assert set(EXPECTED) <= set(listed)
    for line, (name, desc) in zip(lines, list_neurons()):
        assert desc and desc in line, f"{name}: one-line description missing"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"stcsnn {stcsnn.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "neurons" in capsys.readouterr().out


def test_demo_prints_a_rate_per_spiking_neuron_for_each_step(capsys):
    assert main(["demo", "--steps", "3"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    spiking = [n for n, _ in list_neurons() if not getattr(stcsnn.neurons.get_spec(n).cls, "is_ann", False)]
    assert [r[0] for r in rows] == spiking
    for r in rows:
        rates = [float(x) for x in r[r.index("step") + 1:]]
        assert len(rates) == 3 and all(0.0 <= x <= 1.0 for x in rates)
        assert float(r[4]) == pytest.approx(sum(rates) / 3, abs=0.006)  # mean of the printed (rounded) rates


@pytest.mark.parametrize("steps", ["0", "-1", "1001", "ten"])
def test_demo_refuses_a_step_count_outside_1_to_1000(capsys, steps):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--steps", steps])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected a whole number of steps from 1 to 1000" in err and "Traceback" not in err


def test_neurons_shows_kind_and_the_declared_base(capsys):
    assert main(["neurons"]) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["stc_lif"] == ["snn", "STC(if)"] and rows["lif"] == ["snn", "-"]
    assert rows["convlstm"][0] == "ann"


def test_stc_pairs_come_from_the_registry_not_the_name():
    from stcsnn.neurons import NEURONS, SpikingCell, register_neuron, register_stc
    from stcsnn.neurons.lif import IF, MembraneState
    from stcsnn.neurons.registry import get_spec, stc_pairs

    assert get_spec("stc_lif").base == "if" and get_spec("stc_plif").base == "plif"
    assert stc_pairs(["lif", "stc_lif"]) == []  # STC-LIF wraps IF: LIF is not its base
    assert stc_pairs(["lif", "if", "stc_lif", "stc_lmh", "lmh"]) == [("stc_lif", "if"), ("stc_lmh", "lmh")]

    class Leaky(SpikingCell):
        State = MembraneState
        update = IF.update

    try:
        register_neuron("leaky_test", "a test neuron", Leaky)
        register_stc("autapse_on_leaky", Leaky, "its STC form, named unlike its base")
        assert get_spec("autapse_on_leaky").base == "leaky_test"
        assert stc_pairs(["leaky_test", "autapse_on_leaky", "leaky"]) == [("autapse_on_leaky", "leaky_test")]
        with pytest.raises(stcsnn.StcsnnError, match="base_name 'lif' is not a registered neuron of class Leaky"):
            register_stc("bad_test", Leaky, "x", base_name="lif")
    finally:
        for name in ("leaky_test", "autapse_on_leaky", "bad_test"):
            NEURONS.pop(name, None)
