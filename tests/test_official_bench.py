"""benchmarks/official.py: the reference-vs-stcsnn timing script, run on a tiny fake reference repository."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "official.py"

# A stand-in for the reference's two files, written here from the LIF equations (H = 0.5 V + 0.5 GN(W * X),
# S = H > 1, V = H - S), with the reference's constructor/forward signature and state_dict keys.
FAKE_MODULES = '''
import torch
import torch.nn as nn


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(4 * x)
        return grad * 4 * s * (1 - s)


class LIFCell(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.conv_x = nn.Sequential(
            nn.Conv2d(in_channel, num_hidden, filter_size, stride, filter_size // 2, bias=False),
            nn.GroupNorm(16, num_hidden))

    def forward(self, x_t, h_t, g_t):
        h = 0.5 * h_t + 0.5 * self.conv_x(x_t)
        s = _Spike.apply(h - 1.0)
        return s, h - s
'''

FAKE_MODEL = '''
import torch
import torch.nn as nn

from openstl.modules import LIFCell


class LIF_Model(nn.Module):
    def __init__(self, num_layers, num_hidden, configs, **kwargs):
        super().__init__()
        T, C, H, W = configs.in_shape
        self.configs = configs
        self.frame_channel = configs.patch_size ** 2 * C
        self.num_layers, self.num_hidden = num_layers, num_hidden
        size = H // configs.patch_size
        self.cell_list = nn.ModuleList(
            LIFCell(self.frame_channel if i == 0 else num_hidden[i - 1], num_hidden[i], size, size,
                    configs.filter_size, configs.stride, configs.layer_norm) for i in range(num_layers))
        self.conv_last = nn.Conv2d(num_hidden[-1], self.frame_channel, 1, bias=False)

    def forward(self, frames_tensor, mask_true, **kwargs):
        frames = frames_tensor.permute(0, 1, 4, 2, 3)
        mask = mask_true.permute(0, 1, 4, 2, 3)
        b, _, _, h, w = frames.shape
        v = [torch.zeros(b, n, h, w) for n in self.num_hidden]
        s = [torch.zeros(b, n, h, w) for n in self.num_hidden]
        pre = self.configs.pre_seq_length
        out = []
        for t in range(pre + self.configs.aft_seq_length - 1):
            if t < pre:
                net = frames[:, t]
            else:
                net = mask[:, t - pre] * frames[:, t] + (1 - mask[:, t - pre]) * x_gen
            for i, cell in enumerate(self.cell_list):
                s[i], v[i] = cell(net if i == 0 else s[i - 1], v[i], s[i])
            x_gen = self.conv_last(s[-1])
            out.append(x_gen)
        pred = torch.stack(out, 1).permute(0, 1, 3, 4, 2).contiguous()
        loss = nn.functional.mse_loss(pred, frames_tensor[:, 1:]) if kwargs.get("return_loss", True) else None
        return pred, loss
'''

# The trivial variant: the same signatures, nothing like the reference inside (its weights cannot be imported).
TRIVIAL_MODEL = '''
import torch
import torch.nn as nn


class LIF_Model(nn.Module):
    def __init__(self, num_layers, num_hidden, configs, **kwargs):
        super().__init__()
        self.configs = configs
        c = configs.patch_size ** 2 * configs.in_shape[1]
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, frames_tensor, mask_true, **kwargs):
        steps = self.configs.pre_seq_length + self.configs.aft_seq_length - 1
        x = frames_tensor[:, :steps].permute(0, 1, 4, 2, 3)
        pred = self.conv(x.flatten(0, 1)).unflatten(0, x.shape[:2]).permute(0, 1, 3, 4, 2)
        return pred, nn.functional.mse_loss(pred, frames_tensor[:, 1:])
'''

TINY = ["--set", "hidden_channels=[16,16]", "--set", "frame_shape=[1,16,16]", "--set", "batch_size=2",
        "--set", "input_frames=2", "--set", "output_frames=2", "--repeats", "2", "--warmup", "1"]


def _load_script():
    try:
        return load_file(SCRIPT, "official_bench")
    except ImportError as exc:  # the script's optional imports (none beyond stcsnn's own today)
        pytest.skip(f"benchmarks/official.py cannot be imported here: {exc}")


@pytest.fixture(scope="module")
def official():
    return _load_script()


def _fake_repo(root: Path, model: str = FAKE_MODEL, modules: str = FAKE_MODULES) -> Path:
    for rel, text in (("openstl/models/convlif_model.py", model), ("openstl/modules/convlif_modules.py", modules)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    return err


def test_fake_checkout_table_and_json(official, tmp_path, capsys):
    repo = _fake_repo(tmp_path / "ref")
    out = tmp_path / "out"
    rc = official.main(["--official", str(repo), "--neurons", "lif", "--no-memory", "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert rc == 0
    md = (out / "official.md").read_text()
    assert md.strip() == printed.strip()
    rows = [line for line in md.splitlines() if line.startswith("| lif |")]
    assert len(rows) == 2  # the check row and the timing row
    check_row, time_row = rows
    assert "| LIF_Model | 13,120 | 13,120 |" in check_row and "| yes |" in check_row
    cells = [c.strip() for c in time_row.strip("|").split("|")]
    assert cells[1] == "1"  # threads
    for cell in cells[2:]:
        value = float(cell.rstrip("x"))
        assert math.isfinite(value) and value > 0
    res = json.loads((out / "official.json").read_text())
    assert res["reference"]["kind"] == "checkout" and set(res["reference"]["sha256"]) == {
        "openstl/models/convlif_model.py", "openstl/modules/convlif_modules.py"}
    check = res["checks"][0]
    # the fake computes LIF exactly: with the same weights stcsnn must agree (and something must have fired)
    assert check["weights_shared"] and check["same"] and check["verdict_from"] == "float64"
    assert check["float64"]["train_max_abs_diff"] < 1e-9 and check["float64"]["grad_rel_diff"] < 1e-6
    assert max(check["float32"]["firing_rates"]) > 0
    row = res["rows"][0]
    assert len(row["reference_train_times_s"]) == len(row["stcsnn_train_times_s"]) == 2
    assert res["machine"]["cpu"] and res["machine"]["torch"] and res["load_end"]["time"]
    assert "openstl" not in sys.modules  # the temporary package is gone again


def test_git_directory_and_unimportable_weights(official, tmp_path, capsys):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = _fake_repo(tmp_path / "ref", model=TRIVIAL_MODEL)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fake"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    shutil.rmtree(repo / "openstl")  # only the git directory is left: the files must come from `git show`
    out = tmp_path / "out"
    rc = official.main(["--official", str(repo / ".git"), "--neurons", "lif", "--no-memory", "--out", str(out),
                        *TINY])
    capsys.readouterr()
    assert rc == 0
    res = json.loads((out / "official.json").read_text())
    assert res["reference"]["kind"] == "git" and res["reference"]["commit"] == commit
    check = res["checks"][0]
    assert not check["weights_shared"] and "weights not shared" in check["params_note"]
    assert "float64" not in check  # nothing to compare: timed anyway
    assert all(math.isfinite(res["rows"][0][k]) for k in ("train_speedup", "infer_speedup"))


@pytest.mark.parametrize("case", ["missing path", "not a repo", "missing module", "bad neuron", "bad threads"])
def test_expected_failures_are_one_line(official, tmp_path, capsys, case):
    repo = _fake_repo(tmp_path / "ref")
    args = ["--official", str(repo), "--neurons", "lif", "--no-memory", *TINY]
    if case == "missing path":
        args[1] = str(tmp_path / "nowhere")
    elif case == "not a repo":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "missing module":
        _fake_repo(repo, modules="import spikingjelly_not_installed_here\n" + FAKE_MODULES)
    elif case == "bad neuron":
        args[3] = "if"  # stcsnn has it, the reference does not
    else:
        args += ["--threads", "0"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "official.md").write_text("an earlier result\n")
    rc = official.main([*args, "--out", str(out)])
    assert rc == 2
    err = _one_line_error(capsys)
    expected = {"missing path": "found nothing", "not a repo": "found neither",
                "missing module": "spikingjelly_not_installed_here", "bad neuron": "--neurons",
                "bad threads": "--threads"}[case]
    assert expected in err
    assert (out / "official.md").read_text() == "an earlier result\n"
    assert not (out / "official.json").exists()
    assert "openstl" not in sys.modules


def _memory_spec(official, repo: Path, side: str) -> dict:
    return {"official": str(repo), "rev": "HEAD", "neuron": "lif", "side": side,
            "settings": official.CONFIGS["small"], "device": "cpu", "threads": 1,
            "overrides": {"hidden_channels": "[16,16]", "frame_shape": "[1,16,16]", "batch_size": "2",
                          "input_frames": "2", "output_frames": "2"}}


def test_memory_child_measures_one_side(official, tmp_path):
    repo = _fake_repo(tmp_path / "ref")
    got = official.memory_child(_memory_spec(official, repo, "stcsnn"))  # in this process: the code path only
    assert got["side"] == "stcsnn" and got["neuron"] == "lif" and isinstance(got["peak_bytes"], int)
    if sys.platform == "linux":  # the peak is reset before the first step, even in a process that ran much before
        assert got["method"] == "VmHWM" and got["peak_bytes"] >= 0
    assert "openstl" not in sys.modules


@pytest.mark.slow  # a fresh Python process that imports torch: seconds on a busy machine
def test_peak_memory_in_a_fresh_process(official, tmp_path):
    repo = _fake_repo(tmp_path / "ref")
    got = official.run_memory(_memory_spec(official, repo, "reference"))
    assert got["side"] == "reference" and got["method"] in official.MEMORY_METHODS
    assert got["peak_bytes"] > 0  # two training steps of a fresh model touch new memory: activations, Adam state
    with pytest.raises(official.StcsnnError, match="memory subprocess for reference lif failed"):
        official.run_memory(_memory_spec(official, tmp_path / "nowhere", "reference"))
