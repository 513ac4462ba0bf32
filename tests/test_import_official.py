"""``stcsnn import-official``.

The reference model is re-implemented here *from the equations* of the paper's reference code
(``wangtianyi1874/stclif``: ``openstl/modules/convlif_modules.py`` and ``openstl/models/convlif_model.py``),
with its module structure, so its ``state_dict`` has exactly the reference's key names and shapes:
``cell_list.{l}.conv_x`` = Sequential(conv, GroupNorm(16)); ``conv_h`` / ``conv_v`` = Sequential(grouped
conv with 16 groups, GroupNorm(16)), two separate pathways; scalars ``t_m, s_u, s_p, d_u, d_p`` of shape (1,)
where the reference creates them (also those its forward ignores); GLIF's raw parameters under ``glif.`` with
``conduct`` of shape (1, C); the readout ``conv_last``. Frames are patched with PredRNN's ``reshape_patch`` on
channels-last tensors, as the reference's training code does, and the model runs the reference's forward loop
(all states start at zero, layer l reads layer l-1's spikes, fully autoregressive after the inputs).

Nothing here uses stcsnn's neurons, patching or pathway fusion: the test saves the reference state_dict,
runs the CLI, loads the result with ``load_model`` and compares predictions to 1e-5.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from stcsnn.cli import main
from stcsnn.models import PLAIN
from stcsnn.models.loading import load_model, read_checkpoint

GROUPS = 16
B, T_IN, T_OUT, SIZE = 2, 3, 3, 16


# ------------------------------------------------------------------------------------------ the reference
def heaviside(x: Tensor) -> Tensor:
    """SpikingJelly's surrogate.Sigmoid forward: 1 where x >= 0."""
    return (x >= 0).to(x.dtype)


def heaviside_strict(x: Tensor) -> Tensor:
    """GLIF's SpikeAct_extended forward: 1 where x > 0."""
    return (x > 0).to(x.dtype)


def conv_gn(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, groups=groups),
                         nn.GroupNorm(GROUPS, cout))


class RefGLIF(nn.Module):
    """The parameters of the reference's LIFSpike_CW (all raw, used through sigmoid)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        logit = lambda p: math.log(p / (1 - p))  # noqa: E731
        gate = lambda g: logit((g - 0.5) * 0.5 + 0.5)  # noqa: E731  (gates 0.6, 0.8, 0.6 -> 0.55, 0.65, 0.55)
        self.alpha, self.beta, self.gamma = (nn.Parameter(torch.full((c,), gate(g))) for g in (0.6, 0.8, 0.6))
        self.tau = nn.Parameter(torch.full((c,), logit(0.25)))
        self.Vth = nn.Parameter(torch.full((c,), logit(0.5)))
        self.leak = nn.Parameter(torch.full((c,), logit(0.5 / 8)))
        self.reVth = nn.Parameter(torch.full((c,), logit(0.5)))
        self.conduct = nn.Parameter(torch.full((1, c), logit(0.5)))


#: scalars each reference cell creates (shape (1,), init 0)
REF_SCALARS = {
    "lif": (), "glif": (), "stc_lif": (), "plif": ("t_m",), "stc_plif": ("t_m",),
    "tclif": ("t_m", "s_u", "s_p", "d_u", "d_p"), "lmh": ("t_m", "s_u", "s_p", "d_u", "d_p"),
    "stc_lmh": ("t_m", "s_u", "s_p", "d_u", "d_p"),
}


class RefCell(nn.Module):
    def __init__(self, kind: str, cin: int, c: int, k: int) -> None:
        super().__init__()
        self.kind = kind
        self.conv_x = conv_gn(cin, c, k)
        if kind.startswith("stc_"):
            self.conv_h = conv_gn(c, c, k, GROUPS)
            self.conv_v = conv_gn(c, c, k, GROUPS)
        for name in REF_SCALARS[kind]:
            setattr(self, name, nn.Parameter(torch.zeros(1)))
        if kind == "glif":
            self.glif = RefGLIF(c)

    def forward(self, x: Tensor, h: Tensor, d: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step: input x, membrane h, dendrite d, previous spikes g -> (spikes, h, d)."""
        k, sig = self.kind, torch.sigmoid
        i = self.conv_x(x)
        if k == "lif":
            h = h * 0.5 + i * 0.5
            s = heaviside(h - 1.0)
            return s, h - s, d
        if k == "plif":
            h = h * sig(self.t_m) + i * (1 - self.t_m)
            s = heaviside(h - 1.0)
            return s, h - s, d
        if k == "stc_lif":
            h = h * (1 + torch.tanh(self.conv_h(g))) + i * (1 + torch.tanh(self.conv_v(g)))
            s = heaviside(h - 1.0)
            return s, h - s, d
        if k == "stc_plif":
            h = (h * (1 + torch.tanh(self.conv_h(g))) * sig(self.t_m)
                 + i * (1 + torch.tanh(self.conv_v(g))) * (1 - sig(self.t_m)))
            s = heaviside(h - 1.0)
            return s, h - s, d
        if k == "tclif":
            d = d - h * sig(self.s_u) + i - self.t_m * g
            h = h + d * sig(self.s_p) - g
            return heaviside(h - 1.0), h, d
        if k in ("lmh", "stc_lmh"):
            if k == "stc_lmh":
                i = i * (1 + torch.tanh(self.conv_v(g)))
            d = d * (sig(self.d_u) - 0.5) + h * (sig(self.s_u) - 0.5) + i
            if k == "stc_lmh":
                h = h * (1 + torch.tanh(self.conv_h(g)))
            hs = d * (sig(self.d_p) + 0.5) + h * (sig(self.s_p) + 0.5)
            s = heaviside(hs - 1.0)
            return s, hs - s, d
        if k == "glif":
            p = self.glif
            c = lambda t: sig(t).view(1, -1, 1, 1)  # noqa: E731
            al, be, ga = c(p.alpha), c(p.beta), c(p.gamma)
            i = i * (1 - be * (1 - c(p.conduct[0])))
            u = ((1 - al * (1 - c(p.tau))) * h * (1 - ga * g) - (1 - al) * c(p.leak)
                 + i - (1 - ga) * c(p.reVth) * g)
            return heaviside_strict(u - c(p.Vth)), u, d
        raise AssertionError(k)


def reshape_patch(img: Tensor, p: int) -> Tensor:
    """PredRNN / OpenSTL: (B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C)."""
    b, t, h, w, c = img.shape
    a = img.reshape(b, t, h // p, p, w // p, p, c).transpose(3, 4)
    return a.reshape(b, t, h // p, w // p, p * p * c)


def reshape_patch_back(x: Tensor, p: int) -> Tensor:
    b, t, hp, wp, pc = x.shape
    a = x.reshape(b, t, hp, wp, p, p, pc // (p * p)).transpose(3, 4)
    return a.reshape(b, t, hp * p, wp * p, pc // (p * p))


class RefModel(nn.Module):
    """The reference ``<Neuron>_Model``: cell_list + conv_last, PredRNN loop over patches."""

    def __init__(self, kind: str, channels: int, hidden: list[int], k: int, p: int) -> None:
        super().__init__()
        self.p = p
        widths = [p * p * channels, *hidden]
        self.cell_list = nn.ModuleList(RefCell(kind, widths[i], widths[i + 1], k) for i in range(len(hidden)))
        self.conv_last = nn.Conv2d(hidden[-1], p * p * channels, 1, bias=False)

    @torch.no_grad()
    def forward(self, frames: Tensor, n_future: int) -> tuple[Tensor, list[float]]:
        """(B, T_in, C, H, W) -> all outputs (B, T_in + n_future - 1, C, H, W) and per-layer firing rates."""
        x = reshape_patch(frames.permute(0, 1, 3, 4, 2), self.p).permute(0, 1, 4, 2, 3)
        t_in = frames.shape[1]
        b, _, _, hp, wp = x.shape
        zeros = [torch.zeros(b, cell.conv_x[0].out_channels, hp, wp, dtype=x.dtype) for cell in self.cell_list]
        h, d, s = list(zeros), list(zeros), list(zeros)
        rates = [0.0] * len(self.cell_list)
        outs = []
        x_gen = None
        for t in range(t_in + n_future - 1):
            net = x[:, t] if t < t_in else x_gen
            for i, cell in enumerate(self.cell_list):
                s[i], h[i], d[i] = cell(net if i == 0 else s[i - 1], h[i], d[i], s[i])
                rates[i] += s[i].mean().item() / (t_in + n_future - 1)
            x_gen = self.conv_last(s[-1])
            outs.append(x_gen)
        out = torch.stack(outs, 1).permute(0, 1, 3, 4, 2)
        return reshape_patch_back(out, self.p).permute(0, 1, 4, 2, 3), rates


def make_reference(kind: str, channels: int, hidden: list[int], k: int, p: int, seed: int) -> RefModel:
    """A reference model with random weights: GroupNorm affine, scalars and GLIF parameters randomised too."""
    torch.manual_seed(seed)
    model = RefModel(kind, channels, hidden, k, p)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("1.weight"):  # GroupNorm scale
                prm.uniform_(0.5, 2.0)
            elif name.endswith("1.bias"):  # GroupNorm shift
                prm.uniform_(-0.5, 1.5)
            elif name.endswith(".t_m"):  # PLIF w (input gain 1 - w > 0), TC-LIF gamma
                prm.uniform_(-0.8, 0.6)
            elif name.split(".")[-1] in ("s_u", "s_p", "d_u", "d_p"):
                prm.normal_(0.0, 1.0)
            elif ".glif." in name:
                prm.add_(torch.randn_like(prm) * 0.5)
        for cell in model.cell_list:
            if cell.kind == "plif":
                assert abs(cell.t_m.item()) > 0.05  # raw and sigmoid input gains differ clearly
    return model


# ------------------------------------------------------------------------------------------ helpers
def write_config(tmp_path: Path, neuron: str, channels: int = 2, hidden: list[int] | None = None,
                 kernel: int = 3, patch: int = 2, name: str = "cfg.yaml") -> Path:
    cfg = {
        "dataset": "taxibj" if channels == 2 else "mmnist",
        "neuron": neuron,
        "hidden_channels": hidden or [16, 16],
        "kernel_size": kernel,
        "patch_size": patch,
        "input_frames": T_IN,
        "output_frames": T_OUT,
        "frame_shape": [channels, SIZE, SIZE],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["import-official", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


#: neuron -> (frame channels, kernel, patch, how the state_dict is saved)
CASES = {
    "lif": (2, 3, 2, "plain"),
    "plif": (2, 3, 2, "state_dict"),
    "glif": (1, 3, 4, "module"),
    "tclif": (2, 5, 2, "plain"),
    "lmh": (1, 3, 4, "state_dict"),
    "stc_lif": (2, 5, 2, "module"),
    "stc_plif": (2, 3, 2, "openstl"),
    "stc_lmh": (1, 3, 4, "plain"),
}


def save_reference(model: RefModel, path: Path, how: str) -> int:
    sd = model.state_dict()
    if how in ("module", "openstl"):
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"state_dict": sd} if how == "state_dict" else sd
    if how == "openstl":  # OpenSTL's latest.pth: a dict with the weights under state_dict and more
        obj = {"epoch": 7, "state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}
    torch.save(obj, path)
    return len(sd)


# ------------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("neuron", list(CASES))
def test_import_reproduces_reference(neuron: str, tmp_path: Path, capsys) -> None:
    channels, kernel, patch, how = CASES[neuron]
    ref = make_reference(neuron, channels, [16, 16], kernel, patch, seed=list(CASES).index(neuron))
    src = tmp_path / "ref.pth"
    n_keys = save_reference(ref, src, how)
    out = tmp_path / "imported.pt"
    config = write_config(tmp_path, neuron, channels, kernel=kernel, patch=patch)
    code, stdout, err = run_cli(capsys, src, "--config", config, "--out", out)
    assert code == 0, err
    assert "wrote" in stdout

    # float64 on both sides: the reference-format model and stcsnn's paths order their operations differently,
    # and in float32 one rounding difference at a threshold flips a spike on some CPUs
    torch.manual_seed(100)
    frames = torch.rand(B, T_IN, channels, SIZE, SIZE, dtype=torch.float64)
    expected, rates = ref.double()(frames, T_OUT)
    assert all(0.0 < r < 1.0 for r in rates), rates  # spiking, not trivially silent or saturated
    assert expected[:, -T_OUT:].std() > 1e-3

    model, cfg = load_model(out)
    model.double()
    assert cfg.neuron == neuron
    with torch.no_grad():
        pred = model(frames, n_future=T_OUT)
        full = model.rollout(frames, T_IN, T_OUT).frames
        slow = model.rollout(frames, T_IN, T_OUT, policy=PLAIN).frames
    assert pred.shape == (B, T_OUT, channels, SIZE, SIZE)
    torch.testing.assert_close(pred, expected[:, -T_OUT:], atol=1e-9, rtol=0)
    torch.testing.assert_close(full, expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(slow, expected, atol=1e-9, rtol=0)

    record = read_checkpoint(out)["imported_from"]
    assert record["source"] == str(src) and record["source_keys"] == n_keys
    assert record["neuron"] == neuron
    want = {"plif": {"neuron_options.input_gain": "raw"},
            "stc_plif": {"neuron_options.input_gain": "sigmoid"},
            "glif": {"neuron_options.train_gates": False}}.get(neuron, {})
    assert record["behaviours"] == want
    for key, value in want.items():
        assert cfg.neuron_options[key.split(".")[1]] == value


def test_python_api_in_memory(tmp_path: Path) -> None:
    from stcsnn.config import load_config
    from stcsnn.models.official import import_official

    ref = make_reference("stc_lif", 2, [16, 32], 3, 2, seed=5)
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    cfg = load_config(write_config(tmp_path, "stc_lif", hidden=[16, 32]))
    model, info = import_official({"state_dict": sd}, cfg)
    assert info["source"] is None and info["source_keys"] == len(sd) and info["ignored_keys"] == []
    frames = torch.rand(B, T_IN, 2, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.double()(frames, n_future=T_OUT), ref.double()(frames, T_OUT)[0][:, -T_OUT:],
                                   atol=1e-9, rtol=0)


def test_ignored_scalars_are_recorded(tmp_path: Path) -> None:
    from stcsnn.config import load_config
    from stcsnn.models.official import import_official

    ref = make_reference("tclif", 2, [16, 16], 3, 2, seed=3)
    _, info = import_official(ref.state_dict(), load_config(write_config(tmp_path, "tclif")))
    want = [f"cell_list.{l}.{n}" for l in (0, 1) for n in ("d_u", "d_p")]
    assert sorted(info["ignored_keys"]) == sorted(want)


def test_config_input_gain_is_overridden_with_a_note(tmp_path: Path, capsys) -> None:
    ref = make_reference("plif", 2, [16, 16], 3, 2, seed=1)
    src, out = tmp_path / "ref.pth", tmp_path / "out.pt"
    torch.save(ref.state_dict(), src)
    code, stdout, _ = run_cli(capsys, src, "--config", write_config(tmp_path, "plif"),
                              "--set", "neuron_options.input_gain=sigmoid", "--out", out)
    assert code == 0 and "note: neuron_options.input_gain set to 'raw'" in stdout
    assert load_model(out)[1].neuron_options["input_gain"] == "raw"


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def stc_file(tmp_path: Path) -> tuple[Path, dict[str, Tensor]]:
    sd = make_reference("stc_lif", 2, [16, 16], 3, 2, seed=9).state_dict()
    return tmp_path / "ref.pth", sd


def _expect_failure(capsys, tmp_path: Path, src: Path, *extra: str, config: Path | None = None,
                    needles: tuple[str, ...] = ()) -> None:
    out = tmp_path / "out.pt"
    code, _, err = run_cli(capsys, src, "--config", config or write_config(tmp_path, "stc_lif"), *extra,
                           "--out", out)
    assert_one_error(code, err, *needles)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.pt")]  # no temporary left behind


def test_unknown_key(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    sd["cell_list.0.conv_q.weight"] = torch.zeros(3)
    torch.save(sd, src)
    _expect_failure(capsys, tmp_path, src, needles=("unknown keys", "cell_list.0.conv_q.weight"))


def test_missing_key(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    del sd["cell_list.1.conv_v.1.bias"]
    torch.save(sd, src)
    _expect_failure(capsys, tmp_path, src, needles=("missing keys", "cell_list.1.conv_v.1.bias"))


def test_misshaped_key(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    sd["conv_last.weight"] = torch.zeros(8, 16, 3, 3)
    torch.save(sd, src)
    _expect_failure(capsys, tmp_path, src, needles=("mis-shaped", "conv_last.weight (8, 16, 3, 3)"))


def test_truncated_file(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    buf = io.BytesIO()
    torch.save(sd, buf)
    src.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _expect_failure(capsys, tmp_path, src, needles=("cannot be read",))


def test_missing_file(tmp_path: Path, capsys) -> None:
    _expect_failure(capsys, tmp_path, tmp_path / "nope.pth", needles=("not found",))


class _Payload:
    """Unpickling this would run code (create a marker file); weights_only loading must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_file_with_code_is_refused_without_running_it(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    marker = tmp_path / "ran.txt"
    torch.save({"state_dict": sd, "payload": _Payload(str(marker))}, src)
    _expect_failure(capsys, tmp_path, src, needles=("weights_only",))
    assert not marker.exists()


def test_neuron_mismatch(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    torch.save(sd, src)
    _expect_failure(capsys, tmp_path, src, config=write_config(tmp_path, "lif", name="lif.yaml"),
                    needles=("unknown keys", "conv_h", "looks like 'stc_lif'"))
    _expect_failure(capsys, tmp_path, src, config=write_config(tmp_path, "stc_lmh", name="lmh.yaml"),
                    needles=("missing keys", "cell_list.0.t_m"))


def test_architecture_mismatch(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    torch.save(sd, src)
    _expect_failure(capsys, tmp_path, src, "--set", "hidden_channels=[32,16]", needles=("mis-shaped",))
    _expect_failure(capsys, tmp_path, src, "--set", "hidden_channels=[16,16,16]",
                    needles=("missing keys", "cell_list.2.conv_x.0.weight"))
    _expect_failure(capsys, tmp_path, src, "--set", "kernel_size=5", needles=("mis-shaped",))


def test_neuron_without_reference_model(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    torch.save(sd, src)
    _expect_failure(capsys, tmp_path, src, config=write_config(tmp_path, "stc_glif", name="g.yaml"),
                    needles=("no model for neuron 'stc_glif'",))


def test_existing_output_is_not_overwritten_on_failure(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    del sd["conv_last.weight"]
    torch.save(sd, src)
    out = tmp_path / "out.pt"
    out.write_bytes(b"previous")
    code, _, err = run_cli(capsys, src, "--config", write_config(tmp_path, "stc_lif"), "--out", out, "--force")
    assert_one_error(code, err, "conv_last.weight")
    assert out.read_bytes() == b"previous"


def test_stcsnn_checkpoint_is_not_a_reference_file(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    torch.save(sd, src)
    first = tmp_path / "first.pt"
    assert run_cli(capsys, src, "--config", write_config(tmp_path, "stc_lif"), "--out", first)[0] == 0
    _expect_failure(capsys, tmp_path, first, needles=("already an stcsnn checkpoint",))


@pytest.mark.parametrize("damage", ["nan", "inf", "sparse", "meta"])
def test_weights_that_are_no_values_are_refused_naming_the_tensor(stc_file, tmp_path: Path, capsys,
                                                                   damage: str) -> None:
    """NaN or inf weights would be imported into a model that predicts nothing (NaN passes every threshold test
    silently); a sparse or meta tensor has no dense values to convert."""
    src, sd = stc_file
    key = "cell_list.1.conv_h.0.weight"
    if damage in ("nan", "inf"):
        sd[key][0, 0, 0, 0] = float(damage)
    else:
        sd[key] = sd[key].to_sparse() if damage == "sparse" else torch.empty_like(sd[key], device="meta")
    torch.save({"state_dict": sd}, src)
    before = src.read_bytes()
    needles = ("non-finite", "1 non-finite") if damage in ("nan", "inf") else ("sparse_coo" if damage == "sparse"
                                                                              else "meta tensor",)
    _expect_failure(capsys, tmp_path, src, needles=(f"tensor {key!r}", *needles))
    assert src.read_bytes() == before


def test_imported_checkpoint_carries_checksums(stc_file, tmp_path: Path, capsys) -> None:
    src, sd = stc_file
    torch.save(sd, src)
    out = tmp_path / "imported.pt"
    assert run_cli(capsys, src, "--config", write_config(tmp_path, "stc_lif"), "--out", out)[0] == 0
    sums = torch.load(out, weights_only=True)["checksums"]
    assert "model/readout.weight" in sums and len(sums) == len(read_checkpoint(out)["model"])
