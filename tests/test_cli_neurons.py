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
