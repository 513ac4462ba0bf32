"""Bad input on the command line, in configs, checkpoints, exports and data roots: one ``error:`` line (exit 2, no
traceback), refused before anything is allocated or created; absurd thread counts are capped with a warning;
every error line stays readable however long the input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY, one_error, tiny_cfg

import stcsnn
from stcsnn import config as config_module
from stcsnn.cli import MAX_LINE, error_line, main
from stcsnn.config import make_config, memory_estimate, quoted, some
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.io import atomic_torch_save
from stcsnn.models import meta_parameters
from stcsnn.models.loading import model_checkpoint
from stcsnn.neurons import NEURONS, build_neuron
from stcsnn.threads import choose_threads

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
STCSNN = [sys.executable, "-m", "stcsnn"]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, prefix: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *STCSNN, *args], capture_output=True, text=True, timeout=300,
                          env=env or ENV, cwd=cwd)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """:func:`helpers.one_error` for a subprocess."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def train(config: Path, out: Path, *sets: str) -> list[str]:
    return ["train", "--config", str(config), "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)]]


# ------------------------------------------------------------------------------------------------ 11: tracebacks

@pytest.mark.parametrize("key", ["lr", "min_lr", "warmup_lr"])
def test_an_absurd_learning_rate_is_refused_with_its_bound(key, tiny_yaml, tmp_path, capsys):
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", f"{key}=1e300")))
    assert f"--set {key}=1e300: config key '{key}' must be <= 10" in line and "got 1e+300" in line
    assert str(tiny_yaml) not in line  # the --set item is to blame, not the file
    assert not (tmp_path / "run").exists()
    assert make_config(TINY, {key: "10"}).lr > 0  # the bound itself is allowed


def test_a_set_value_of_the_wrong_type_names_set_not_the_file(tiny_yaml, tmp_path, capsys):
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", "hidden_channels=64")))
    assert line == "error: --set hidden_channels=64: config key 'hidden_channels' expects a list, got 64 (int)"
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", "nope=1")))
    assert line.startswith("error: --set nope: unknown config key 'nope'") and str(tiny_yaml) not in line
    # an error of the file itself still names the file
    tiny_yaml.write_text(yaml.safe_dump({**TINY, "hidden_channels": 64}))
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run")))
    assert line.endswith(f"expects a list, got 64 (int) in {tiny_yaml}") and "--set" not in line


def test_a_huge_thread_count_is_capped_not_a_traceback(capsys):
    usable = choose_threads("auto", environ={}, load=0.0).threads  # no other load: every usable CPU
    before = torch.get_num_threads()
    try:
        assert main(["--threads", "99999999999999999999999", "neurons"]) == 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("warning: --threads <an integer of 77 bits> is more threads")
        assert f"using {usable}" in err and torch.get_num_threads() == usable
        line = one_error(capsys, main(["--threads", "9" * 5000, "neurons"]))
        assert "threads must be 'auto' or an integer >= 1" in line and "(5,000 characters)" in line
    finally:
        torch.set_num_threads(before)


def test_thread_counts_above_the_usable_cpus_are_capped_with_a_warning():
    choice = choose_threads(10000, environ={}, cpus={0, 1}, quota=None, load=0.0)
    assert choice.threads == 2 and choice.warning.startswith("warning: --threads 10000 is more threads than the 2")
    choice = choose_threads("auto", environ={"OMP_NUM_THREADS": "10000"}, cpus={0, 1, 2}, quota=None, load=0.0)
    assert choice.threads == 3 and "OMP_NUM_THREADS=10000" in choice.warning
    choice = choose_threads(2, environ={}, cpus={0, 1}, quota=None, load=0.0)
    assert (choice.threads, choice.warning) == (2, "")  # within the CPUs: no word
    assert choose_threads(8, environ={}, cpus=set(range(16)), quota=3.0, load=0.0).threads == 3  # cgroup quota


def test_a_huge_omp_num_threads_is_capped_in_a_real_process():
    r = run_cli("neurons", env={**ENV, "OMP_NUM_THREADS": "99999999999999999999999"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "warning: OMP_NUM_THREADS=<an integer of 77 bits> is more threads than the" in r.stderr
    assert "stc_lif" in r.stdout


@pytest.fixture
def clean_plugins():
    """Forget the neurons and modules the plugins of a test register."""
    neurons, modules = set(NEURONS), set(sys.modules)
    yield
    for name in set(NEURONS) - neurons:
        del NEURONS[name]
    for name in set(sys.modules) - modules:
        del sys.modules[name]


PLUGIN = '''
from stcsnn.neurons import register_neuron
from stcsnn.neurons.lif import LIF

@register_neuron("file_lif", "a LIF registered by a plugin given as a file")
class FileLIF(LIF):
    pass
'''


def test_a_plugin_may_be_a_file_path(tmp_path, clean_plugins, capsys):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "file_plugin.py").write_text(PLUGIN)
    assert main(["--plugin", str(tmp_path / "plug" / "file_plugin.py"), "neurons"]) == 0
    assert "file_lif" in capsys.readouterr().out
    assert type(build_neuron("file_lif", 4, 16, 3)).__name__ == "FileLIF"
    # the same file again (a second --plugin of it, or the next command in this process) is a no-op
    assert main(["--plugin", str(tmp_path / "plug" / "file_plugin.py"), "neurons"]) == 0
    # a relative path, in a real process
    r = run_cli("--plugin", "./plug/file_plugin.py", "neurons", cwd=tmp_path)
    assert r.returncode == 0 and "file_lif" in r.stdout, r.stderr


@pytest.mark.parametrize("plugin, message", [
    ("..os", "cannot import plugin '..os': expected a module name (e.g. my_neurons or package.module) or the "
             "path of a .py file"),
    ("./plug/missing.py", "cannot import plugin './plug/missing.py': expected a Python file (.py), found nothing"),
    ("./plug", "cannot import plugin './plug': expected a Python file (.py), found a folder"),
    ("./plug/raises.py", "cannot import plugin './plug/raises.py': it raised RuntimeError: plugin broke"),
    ("raises", "cannot import plugin 'raises': it raised RuntimeError: plugin broke"),
    ("imports_missing", "cannot import plugin 'imports_missing': it raised ModuleNotFoundError: No module named "
                        "'no_such_dependency_xyz'"),
    ("exits", "cannot import plugin 'exits': it raised SystemExit: 3"),
    ("no_such_plugin_xyz", "cannot import plugin 'no_such_plugin_xyz': No module named 'no_such_plugin_xyz' (is "
                           "its folder on PYTHONPATH?"),
])
def test_a_plugin_that_fails_is_one_line_naming_it(plugin, message, tmp_path, monkeypatch, clean_plugins, capsys):
    (tmp_path / "plug").mkdir()
    for folder in (tmp_path, tmp_path / "plug"):
        (folder / "raises.py").write_text("raise RuntimeError('plugin broke')\n")
    (tmp_path / "imports_missing.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    line = one_error(capsys, main(["--plugin", plugin, "neurons"]))
    assert line == f"error: {message}" or line.startswith(f"error: {message}"), line
    assert "raises" not in sys.modules  # a failed plugin leaves no half-imported module behind


@pytest.fixture
def root_cases(tmp_path) -> Path:
    """A folder with the bad data roots: a file, a symbolic link loop, a dangling link, a path through a file."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "loop_a").symlink_to("loop_b")
    (tmp_path / "loop_b").symlink_to("loop_a")
    (tmp_path / "dangling").symlink_to("nowhere")
    return tmp_path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("action", ["prepare", "info"])
@pytest.mark.parametrize("root, found", [
    ("afile", "found a file"),
    ("loop_a", "found a symbolic link loop"),
    ("dangling", "found a symbolic link to 'nowhere', which does not exist"),
    ("afile/sub", "found a file where a folder belongs"),
    ("loop_a/sub", "found a symbolic link loop"),
])
def test_a_data_root_that_is_not_a_folder_is_one_line(action, root, found, root_cases, capsys):
    before = _listing(root_cases)
    line = one_error(capsys, main(["data", action, "mmnist", "--root", str(root_cases / root)]))
    assert line.startswith(f"error: data root '{root_cases / root}': expected a folder, {found}"), line
    assert _listing(root_cases) == before  # nothing created, no download tried


def test_a_symbolic_link_loop_under_the_root_is_one_line(tmp_path, capsys):
    (tmp_path / "moving_mnist").symlink_to("moving_mnist")  # a link to itself, where prepare makes a folder
    line = one_error(capsys, main(["data", "prepare", "mmnist", "--root", str(tmp_path)]))
    assert f"cannot use the data root '{tmp_path}': a symbolic link that leads nowhere" in line
    assert f"'{tmp_path / 'moving_mnist'}'" in line


def _as_unprivileged() -> tuple[str, ...] | None:
    """A command prefix under which this user cannot read a mode-000 folder: none for a normal user, for root
    ``setpriv`` dropping the capabilities that bypass file permissions; ``None`` if neither is possible."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    prefix = (setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}")
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_an_unreadable_data_root_is_one_line(tmp_path):
    prefix = _as_unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv (or capabilities to drop): cannot make a folder unreadable")
    root = tmp_path / "root"
    (root / "moving_mnist").mkdir(parents=True)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": "mmnist", "data_root": str(root), "data_options": {}}))
    try:
        root.chmod(0)
        for args in (("data", "info", "mmnist", "--root", str(root)), ("data", "prepare", "mmnist", "--root",
                     str(root)), ("train", "--config", str(config), "--out", str(tmp_path / "run"))):
            line = one_error_line(run_cli(*args, prefix=prefix))
            assert line == f"error: data root '{root}': expected a folder this user may read, found permission " \
                           "denied", (args, line)
        # the root is readable, a folder under it is not
        root.chmod(0o755)
        (root / "moving_mnist").chmod(0)
        line = one_error_line(run_cli("train", "--config", str(config), "--out", str(tmp_path / "run"),
                                      prefix=prefix))
        assert line.startswith("error: the 'mmnist' train split cannot be read: permission denied ("), line
        r = run_cli("data", "prepare", "mmnist", "--root", str(root), prefix=prefix)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"error: cannot use the data root '{root}': permission denied" in r.stderr
    finally:
        root.chmod(0o755)
        (root / "moving_mnist").chmod(0o755)
    assert not (tmp_path / "run").exists()


def test_a_data_root_too_long_for_the_os_is_one_line(tiny_yaml, tmp_path, capsys):
    long = "a" * 60000
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", f"data_root={long}")))
    assert "config key 'data_root' is a path of 60,000 bytes" in line and len(line) < 400
    line = one_error(capsys, main(["data", "prepare", "mmnist", "--root", long]))
    assert "the data root is a path of 60,000 bytes" in line and len(line) < 400
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", f"data_root=/tmp/{'b' * 300}/x")))
    assert "config key 'data_root' has a path component of 300 bytes" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ 12: memory bombs

def test_the_memory_estimate_is_hand_computed_and_counts_the_real_parameters():
    cfg = tiny_cfg(frame_shape=[1, 32, 32])  # 32x32 frames in 4x4 patches: 8x8 positions of 16 channels
    real = sum(p.numel() for p in stcsnn.build_model(cfg).parameters())
    assert meta_parameters(cfg, (1, 32, 32)) == real  # counted on the meta device
    params, need = memory_estimate(cfg, params=meta_parameters(cfg, (1, 32, 32)))
    assert params == real
    assert memory_estimate(cfg)[0] == 3 * 3 * 16 * 16 + 16 * 16  # the lower bound: synaptic conv 16 -> 16, readout
    weights = 4 * real * 4  # weights, gradients, Adam's two moments; float32
    activations = 2 * 6 * 16 * 8 * 8 * 4  # batch 2, 3 + 3 steps, 16 channels, 8x8 positions
    frames = 2 * 2 * 6 * 1 * 32 * 32 * 4  # inputs and targets, predictions: 2 x (batch, steps, C, H, W)
    assert need == weights + activations + frames
    for neuron in ("stc_lif", "lif", "plif", "stc_glif", "convlstm"):
        for hidden in ([16], [32, 16, 48]):
            cfg = tiny_cfg(neuron=neuron, hidden_channels=hidden, frame_shape=[2, 16, 16])
            real = sum(p.numel() for p in stcsnn.build_model(cfg).parameters())
            assert meta_parameters(cfg, (2, 16, 16)) == real and memory_estimate(cfg)[0] <= real, neuron


def test_building_the_config_draws_no_random_numbers():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    tiny_cfg(frame_shape=[1, 32, 32], hidden_channels=[64, 64])
    assert torch.equal(torch.get_rng_state(), state)


def test_the_memory_limit_is_the_available_memory(monkeypatch):
    cfg = tiny_cfg(frame_shape=[1, 32, 32])
    params, need = memory_estimate(cfg)
    # a training step is checked by `train` (check_memory), a model by every make_config (the weights alone)
    monkeypatch.setattr(config_module, "available_memory", lambda: need)
    config_module.check_memory(cfg)
    monkeypatch.setattr(config_module, "available_memory", lambda: need - 1)
    with pytest.raises(ConfigError, match=rf"this config needs at least 0.0 GiB of memory \({params} parameters; "):
        config_module.check_memory(cfg)
    assert make_config(cfg.to_dict()) == cfg  # loading it to evaluate or predict needs far less
    weights = memory_estimate(cfg, training=False)[1]
    assert weights == params * 4 < need
    monkeypatch.setattr(config_module, "available_memory", lambda: weights - 1)
    with pytest.raises(ConfigError, match=rf"\({params} parameters; .* \(for the model and its frames\)"):
        make_config(cfg.to_dict())
    monkeypatch.setattr(config_module, "available_memory", lambda: None)  # unknown: no check
    config_module.check_memory(cfg)
    assert make_config(cfg.to_dict()) == cfg
    monkeypatch.undo()
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = next(int(x.split()[1]) for x in meminfo.read_text().splitlines() if x.startswith("MemAvailable:"))
        assert abs(config_module.available_memory() - kib * 1024) < 2**30  # it moves a little between readings


@pytest.mark.parametrize("item, found", [
    ("hidden_channels=[1048576]", "this config needs at least"),
    ("kernel_size=99999", "config key 'kernel_size' must be <= 32, the larger side of the 32x32 frames, got 99999"),
    ("output_frames=1000000000", "this config needs at least"),
    ("batch_size=1000000000", "this config needs at least"),
    (f"hidden_channels=[{10**400}]", "this config needs at least more than 2^"),
])
def test_memory_bombs_are_refused_before_allocating(item, found, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "frame_shape": [1, 32, 32]}))
    line = one_error(capsys, main(train(config, tmp_path / "run", item)))
    assert found in line and len(line) <= MAX_LINE
    if "needs at least" in found:
        assert "available on this machine" in line and "--set" in line
    assert not (tmp_path / "run").exists()


def test_kernel_size_without_a_frame_shape_is_bounded_by_the_memory_estimate(tiny_yaml, tmp_path, capsys):
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", "kernel_size=99999",
                                        "hidden_channels=[1024,1024]")))
    assert "this config needs at least" in line
    # with the frame shape unknown to the config, the trainer records the data's and validates again
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", "kernel_size=33")))
    assert "config key 'kernel_size' must be <= 32, the larger side of the 32x32 frames, got 33" in line


def test_memory_bombs_in_checkpoints_and_exports_are_refused(tmp_path, capsys):
    cfg = make_config({**TINY, "frame_shape": [1, 32, 32]})
    ckpt = model_checkpoint(stcsnn.build_model(cfg), cfg)
    ckpt["config"] = {**ckpt["config"], "hidden_channels": [1048576]}
    atomic_torch_save(ckpt, tmp_path / "bomb.pt")
    line = one_error(capsys, main(["eval", "--checkpoint", str(tmp_path / "bomb.pt"), "--out",
                                   str(tmp_path / "out")]))
    assert "this config needs at least" in line
    good = tmp_path / "good.pt"
    atomic_torch_save(model_checkpoint(stcsnn.build_model(cfg), cfg), good)
    assert main(["export", str(good), "--out", str(tmp_path / "exp")]) == 0
    meta = json.loads((tmp_path / "exp" / "config.json").read_text())
    (tmp_path / "exp" / "config.json").write_text(json.dumps({**meta, "output_frames": 10**9}))
    np.save(tmp_path / "in.npy", np.zeros((1, 3, 1, 32, 32), np.float32))
    line = one_error(capsys, main(["predict", "--checkpoint", str(tmp_path / "exp"), "--input",
                                   str(tmp_path / "in.npy"), "--output", str(tmp_path / "p.npy")]))
    # the model itself is small: predict's own check refuses the rollout of 10^9 frames it would run
    assert "3 input -> 1000000000 predicted frames" in line and "lower --frames" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.npy").exists()


# ------------------------------------------------------------------------------------------------ 13: unbounded work

def test_a_batch_larger_than_the_training_split_is_refused_with_both_numbers(tiny_yaml, tmp_path, capsys):
    # TINY's embedded data: num_samples 8 training sequences
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", "batch_size=9")))
    assert line == "error: the 'embedded' training split has 8 sequences, fewer than one batch of 9"
    assert not (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------------------------------------ 14: long lines

def test_a_60k_value_gives_a_short_line(tiny_yaml, tmp_path, capsys):
    line = one_error(capsys, main(train(tiny_yaml, tmp_path / "run", f"neuron={'n' * 60000}")))
    assert len(line) <= MAX_LINE and "unknown neuron 'nnnn" in line and "(60,000 characters)" in line
    assert "expected one of" in line  # the end of the message is kept


def test_thousands_of_unknown_data_options_give_a_short_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    options = {f"o{i:04d}": 0 for i in range(5000)}  # 55 kB of YAML: under the 64 kB a config may have
    config.write_text(yaml.safe_dump({**TINY, "data_options": options}))
    line = one_error(capsys, main(train(config, tmp_path / "run")))
    assert len(line) <= MAX_LINE, len(line)
    assert "unknown option(s) 'o0000', 'o0001', 'o0002', 'o0003', 'o0004', ... (5,000 in all) for " \
           "dataset 'embedded'" in line


def test_error_line_is_a_last_guard():
    text = "start " + " ".join(f"word{i}" for i in range(20000)) + " the fix"
    line = error_line(StcsnnError(text))
    assert len(line) <= MAX_LINE and line.startswith("start word0") and line.endswith("the fix")
    assert "characters cut" in line
    line = error_line(StcsnnError(f"bad value {'x' * 100000} here"))
    assert line == f"bad value {'x' * 100}... (100,000 characters) here"
    assert error_line(StcsnnError("short and\nplain")) == "short and plain"  # unchanged below the limits


def test_quoted_and_some():
    assert quoted("a" * 1000, 20) == repr("a" * 1000)[:17] + "... (1,000 characters)"
    assert quoted("abc") == "'abc'" and quoted(5) == "5"
    assert some(["a", "b"]) == "'a', 'b'"
    assert some([f"k{i}" for i in range(7)], first=3) == "'k0', 'k1', 'k2', ... (7 in all)"
