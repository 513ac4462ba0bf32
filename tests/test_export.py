"""stcsnn export (safetensors + config.json + model card, --onnx, --push), loading export folders and hf://
repositories without pickle, the streaming step (model.step) and hubconf.py."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_error

import stcsnn
from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.errors import CheckpointError, StcsnnError
from stcsnn.io import atomic_torch_save
from stcsnn.models.loading import load_model, model_checkpoint
from tests.helpers import load_file

ROOT = Path(__file__).resolve().parents[1]
T_IN, T_OUT = 3, 2


def tiny_config(neuron: str = "stc_lif", **extra):
    return make_config({"neuron": neuron, "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
                        "frame_shape": [1, 16, 16], "input_frames": T_IN, "output_frames": T_OUT, **extra})


def write_checkpoint(path: Path, neuron: str = "stc_lif", seed: int = 0, **extra) -> Path:
    cfg = tiny_config(neuron)
    torch.manual_seed(seed)
    atomic_torch_save(model_checkpoint(stcsnn.build_model(cfg), cfg, **extra), path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "model"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    return out




def frames(n: int = 2, t: int = T_IN, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, t, 1, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------- step
@pytest.mark.parametrize("name", [n for n, _ in stcsnn.neurons.list_neurons()])
def test_step_by_step_equals_the_rollout_for_every_neuron(name):
    """Feeding the inputs, then each forecast, through step() is model(inputs, n_future), on both paths."""
    cfg = make_config({"neuron": name, "hidden_channels": [16, 16], "kernel_size": 3, "patch_size": 2,
                       "frame_shape": [1, 16, 16]})
    torch.manual_seed(0)
    model = stcsnn.build_model(cfg).double().eval()
    x = frames(dtype=torch.float64) * 2  # brighter than [0, 1]: more spikes, a stronger test
    n_future = 4
    with torch.no_grad():
        ref = model(x, n_future)
        rollout = model.rollout(x, T_IN, n_future)
        if not stcsnn.neurons.get_spec(name).is_ann:  # the premise: spikes happen (and not everywhere)
            assert (rollout.rates > 0).all() and (rollout.rates < 1).all(), rollout.rates
        for fast in (True, False):
            state = None
            for t in range(T_IN):
                pred, state = model.step(x[:, t], state, fast=fast)
            preds = [pred]
            for _ in range(n_future - 1):
                pred, state = model.step(pred, state, fast=fast)
                preds.append(pred)
            torch.testing.assert_close(torch.stack(preds, 1), ref, rtol=0, atol=1e-9)
    assert len(state) == len(model.cells) and all(isinstance(s, c.State) for s, c in zip(state, model.cells))


def test_step_state_is_checked_and_plain_tuples_are_accepted():
    model = stcsnn.build_model(tiny_config("lif")).eval()
    x = frames()[:, 0]
    with torch.no_grad():
        pred, state = model.step(x)
        assert pred.shape == x.shape
        assert state[0]._fields == ("v", "s") and state[0].v.shape == (2, 16, 4, 4)
        again, _ = model.step(x, state)
        plain, _ = model.step(x, [tuple(state[0])])  # e.g. a state that went through ONNX as plain tensors
        assert torch.equal(again, plain)
        with pytest.raises(StcsnnError, match="tuple of 1 per-layer cell states"):
            model.step(x, state + state)
        with pytest.raises(StcsnnError, match=r"expected shape \(1, 16, 4, 4\)"):
            model.step(x[:1], state)  # a state of batch 2 for a batch of 1
        with pytest.raises(StcsnnError, match=r"shape \(B, C, H, W\)"):
            model.step(frames())


# ---------------------------------------------------------------------------------------------- export
def test_export_writes_safetensors_config_and_card_and_loads_to_equal_predictions(ckpt, exported):
    from safetensors.torch import load_file

    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model, cfg = load_model(ckpt)
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "stcsnn-export" and config["version"] == 1
    assert config["stcsnn_version"] == stcsnn.__version__
    assert {k: v for k, v in config.items() if k not in ("format", "version", "stcsnn_version")} == cfg.to_dict()
    weights = load_file(exported / "model.safetensors")
    state = model.state_dict()
    assert weights.keys() == state.keys() and all(torch.equal(weights[k], state[k]) for k in state)
    folder_model, folder_cfg = stcsnn.load_model(exported)
    assert folder_cfg == cfg and not folder_model.training
    x = frames()
    with torch.no_grad():
        assert torch.equal(folder_model(x, T_OUT), model(x, T_OUT))


def test_export_leaves_the_local_data_root_out(tmp_path):
    cfg = tiny_config(data_root=str(tmp_path / "my" / "data"))
    torch.manual_seed(0)
    atomic_torch_save(model_checkpoint(stcsnn.build_model(cfg), cfg), tmp_path / "best.pt")
    assert main(["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "out")]) == 0
    assert "my" not in (tmp_path / "out" / "config.json").read_text()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["data_root"] is None
    assert stcsnn.load_model(tmp_path / "out")[1].data_root is None


def test_loading_a_folder_reads_no_pickle(exported, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading an export folder")

    for owner, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads"),
                        (pickle, "Unpickler")):
        monkeypatch.setattr(owner, name, refuse)
    model, cfg = load_model(exported)
    assert cfg.neuron == "stc_lif" and len(model.cells) == 1
    with pytest.raises(AssertionError, match="pickle used"):  # the trap is armed: a checkpoint would trip it
        torch.load(exported / "model.safetensors")


def test_export_weights_carry_the_sha256_of_each_tensor(exported):
    """The checksums in the safetensors metadata, recomputed here with hashlib over the raw data section."""
    import hashlib

    data = (exported / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    sums = json.loads(header["__metadata__"]["stcsnn_checksums"])
    assert set(sums) == set(header) - {"__metadata__"}
    names = {"F32": "torch.float32", "F64": "torch.float64"}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        h = hashlib.sha256(f"{names[entry['dtype']]}{tuple(entry['shape'])}".encode())
        h.update(data[8 + n + begin:8 + n + end])
        assert sums[name] == h.hexdigest(), name


def test_an_export_without_checksums_loads_with_a_note(exported, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_bytes((exported / "config.json").read_bytes())
    save_file(load_file(exported / "model.safetensors"), old / "model.safetensors", metadata={"format": "pt"})
    model, _ = load_model(old)
    reference, _ = load_model(exported)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    err = capsys.readouterr().err
    assert err.startswith("note: ") and "no checksums" in err and len(err.splitlines()) == 1


def test_predict_accepts_the_folder_as_checkpoint_with_identical_output(ckpt, exported, tmp_path):
    np.save(tmp_path / "in.npy", frames(3).numpy())
    for name, source in (("a.npy", ckpt), ("b.npy", exported)):
        assert main(["predict", "--checkpoint", str(source), "--input", str(tmp_path / "in.npy"), "--output",
                     str(tmp_path / name), "--device", "cpu", "--no-clip"]) == 0
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_export_refuses_a_folder_with_files_and_force_replaces_only_its_own(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = one_error(capsys, main(["export", str(ckpt), "--out", str(out)]))
    assert "already holds files (notes.txt)" in line and "--force" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["export", str(ckpt), "--out", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    # a new export without --onnx must not leave the graph of an earlier --onnx export beside the new weights,
    # nor drop it: it is regenerated for them
    pytest.importorskip("onnxruntime")
    (out / "step.onnx").write_bytes(b"the graph of the weights being replaced")
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    capsys.readouterr()
    assert main(["export", str(other), "--out", str(out), "--force"]) == 0
    assert "step.onnx of an earlier export: regenerated for the new weights" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "notes.txt",
                                                     "step.onnx"]
    loaded, _ = load_model(out)
    assert torch.equal(loaded.readout.weight, load_model(other)[0].readout.weight)
    _ort_vs_torch(out, steps=4)  # the graph is the new weights'
    assert "`step.onnx`" in (out / "README.md").read_text()


def test_export_errors_are_one_line_and_leave_nothing(ckpt, tmp_path, capsys):
    line = one_error(capsys, main(["export", str(ckpt.parent), "--out", str(tmp_path / "o")]))
    assert "is a folder; expected a checkpoint file" in line
    (tmp_path / "file").write_bytes(b"x")
    line = one_error(capsys, main(["export", str(ckpt), "--out", str(tmp_path / "file")]))
    assert "is a file; expected a folder" in line and (tmp_path / "file").read_bytes() == b"x"
    line = one_error(capsys, main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]))
    assert "not found" in line
    assert not (tmp_path / "o").exists()


def test_checkpoint_without_config_is_one_checkpoint_error(tmp_path, capsys):
    cfg = tiny_config()
    ckpt = model_checkpoint(stcsnn.build_model(cfg), cfg)
    del ckpt["config"]
    atomic_torch_save(ckpt, tmp_path / "noconfig.pt")
    with pytest.raises(CheckpointError, match="holds no 'config' entry"):
        load_model(tmp_path / "noconfig.pt")
    np.save(tmp_path / "in.npy", frames().numpy())
    line = one_error(capsys, main(["predict", "--checkpoint", str(tmp_path / "noconfig.pt"), "--input",
                                   str(tmp_path / "in.npy"), "--output", str(tmp_path / "p.npy")]))
    assert "no 'config' entry" in line and not (tmp_path / "p.npy").exists()


def _copy_export(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("damage, message", [
    ("no_config", "folder without config.json"),
    ("no_weights", "no model.safetensors"),
    ("bad_json", "cannot be read as JSON"),
    ("other_format", "expected 'stcsnn-export'"),
    ("newer", "export version 99"),
    ("bad_config", "holds a config that is not valid"),
    ("truncated", "model.safetensors cannot be read"),
    ("other_weights", "does not match its model"),
])
def test_damaged_export_folders_are_one_checkpoint_error(exported, tmp_path, damage, message):
    d = _copy_export(exported, tmp_path / "d")
    config = json.loads((d / "config.json").read_text())
    if damage == "no_config":
        (d / "config.json").unlink()
    elif damage == "no_weights":
        (d / "model.safetensors").unlink()
    elif damage == "bad_json":
        (d / "config.json").write_text("{not json")
    elif damage in ("other_format", "newer", "bad_config"):
        config.update({"other_format": {"format": "something"}, "newer": {"version": 99},
                       "bad_config": {"hidden_channels": "many"}}[damage])
        (d / "config.json").write_text(json.dumps(config))
    elif damage == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "other_weights":
        config["hidden_channels"] = [32]
        (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_model(d)


def test_a_run_folder_given_as_checkpoint_points_to_its_checkpoint(ckpt):
    with pytest.raises(CheckpointError, match="for the run folder's checkpoint use .*best.pt"):
        load_model(ckpt.parent)


def test_model_card_holds_budget_metrics_command_and_loading(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ckpt = write_checkpoint(run / "best.pt", epoch=3, batch=0, step=120, best_val_mse=12.5)
    report = {"split": "test", "checkpoint": str(run / "best.pt"), "dataset": "embedded", "num_samples": 8,
              "metrics": {"mse": 229.5816, "mae": 604.6352, "ssim": 0.1584, "psnr": 12.896},
              # the card takes a report's numbers only when it records this checkpoint's sha256
              "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    (run / "report.json").write_text(json.dumps(report))
    assert main(["export", str(ckpt), "--out", str(tmp_path / "x")]) == 0
    card = (tmp_path / "x" / "README.md").read_text()
    for text in ("library_name: stcsnn", "`stc_lif`", "`embedded`", "3 input -> 2 predicted, 1x16x16",
                 "1 layer of [16] channels, kernel 3, patch 4", "3 of 500 configured epochs completed",
                 "120 optimizer steps", "best validation MSE 12.5000", "| 229.5816 | 604.6352 | 0.1584 | 12.896 |",
                 f"stcsnn export {ckpt} --out {tmp_path / 'x'}", "## License", 'stcsnn.load_model("THIS_FOLDER")'):
        assert text in card, text
    # a report about another checkpoint is not this one's
    last = write_checkpoint(run / "last.pt")
    assert main(["export", str(last), "--out", str(tmp_path / "y")]) == 0
    card = (tmp_path / "y" / "README.md").read_text()
    assert "Not evaluated (report.json beside the checkpoint is about best.pt, not last.pt)" in card
    assert "not recorded in the checkpoint" in card


# ---------------------------------------------------------------------------------------------- Hub
@pytest.fixture
def hub_cache(exported, tmp_path, monkeypatch):
    """A Hugging Face cache holding user/repo (main and tag v1 -> commit C1) as snapshot_download leaves it,
    with the Hub offline: snapshot_download must resolve revisions from the cache alone."""
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants as constants

    commit = "c" * 40
    repo = tmp_path / "cache" / "models--user--repo"
    (repo / "snapshots").mkdir(parents=True)
    _copy_export(exported, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    return commit


def test_load_from_the_hub_offline_cache_by_branch_tag_and_commit(hub_cache, ckpt, monkeypatch):
    import huggingface_hub

    calls = []
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, **kw: calls.append((repo, kw.get("revision"))) or real(repo, **kw))
    model, _ = load_model(ckpt)
    x = frames()
    for source in ("hf://user/repo", "hf://user/repo@v1", f"hf://user/repo@{hub_cache}"):
        hub_model, cfg = stcsnn.load_model(source)
        with torch.no_grad():
            assert torch.equal(hub_model(x, T_OUT), model(x, T_OUT)), source
    assert calls == [("user/repo", None), ("user/repo", "v1"), ("user/repo", hub_cache)]
    with pytest.raises(CheckpointError, match="cannot fetch 'hf://user/repo@v2' from the Hugging Face Hub"):
        stcsnn.load_model("hf://user/repo@v2")
    with pytest.raises(CheckpointError, match="expected hf://USER/REPO"):
        stcsnn.load_model("hf://just-a-name")


def test_hub_without_its_package_is_one_line(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match=r'pip install "stcsnn\[hub\]"'):
        stcsnn.load_model("hf://user/repo")
    line = one_error(capsys, main(["export", str(ckpt), "--out", str(tmp_path / "o"), "--push", "user/repo"]))
    assert 'pip install "stcsnn[hub]"' in line and not (tmp_path / "o").exists()


def test_export_push_uploads_the_folder(ckpt, tmp_path, monkeypatch, capsys):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload", kw))

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    out = tmp_path / "o"
    assert main(["export", str(ckpt), "--out", str(out), "--push", "user/repo"]) == 0
    assert "uploaded to https://huggingface.co/user/repo" in capsys.readouterr().out
    assert calls[0] == ("create", "user/repo", {"repo_type": "model", "exist_ok": True})
    upload = calls[1][1]
    assert upload["repo_id"] == "user/repo" and Path(upload["folder_path"]) == out
    assert sorted(upload["allow_patterns"]) == ["README.md", "config.json", "model.safetensors"]
    assert "--push user/repo" in (out / "README.md").read_text()

    def fail(self, **kw):
        raise OSError("401 Unauthorized")

    monkeypatch.setattr(FakeApi, "upload_folder", fail)
    line = one_error(capsys, main(["export", str(ckpt), "--out", str(tmp_path / "p"), "--push", "user/repo"]))
    assert "is complete, but uploading it to 'user/repo' failed" in line and "401 Unauthorized" in line
    assert (tmp_path / "p" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- ONNX
def _ort_vs_torch(folder: Path, steps: int = 20, batch: int = 1):
    """Run the ONNX step and model.step side by side, each fed its own forecasts after T_IN input frames.

    Forecasts agree to 1e-5 and spikes exactly (a spike flipped by rounding would show). Membranes agree to 1e-5
    times their largest magnitude (at least 1): an untrained STC-LIF's negative membrane grows about 2x per step
    (gains up to 2, no leak, no reset below threshold), to ~5e5 after 20 steps, where float32's own spacing is
    0.03, and a small value computed from large ones carries their rounding; measured, the error stays ~1e-6 of
    the magnitude (float32 rounding) throughout."""
    pytest.importorskip("onnxruntime")
    from stcsnn.models.export import flatten_state, onnx_session, state_names, zero_state

    model, cfg = load_model(folder)
    session = onnx_session((folder / "step.onnx").read_bytes())
    names = state_names(model)
    x = frames(batch, T_IN, seed=1)
    flat = [t.numpy() for t in zero_state(model, batch, cfg.frame_shape)]
    state, ort_in, torch_in, spikes = None, None, None, []
    with torch.no_grad():
        for t in range(steps):
            ort_in = x[:, t].numpy() if t < T_IN else ort_in
            torch_in = x[:, t] if t < T_IN else torch_in
            out = session.run(None, {"frame": ort_in, **dict(zip(names, flat))})
            pred, state = model.step(torch_in, state, fast=False)
            np.testing.assert_allclose(out[0], pred.numpy(), rtol=0, atol=1e-5, err_msg=f"step {t}: prediction")
            for got, want, name in zip(out[1:], flatten_state(state), names):
                if name.endswith("_s"):
                    assert np.array_equal(got, want.numpy()), f"step {t}: {name}: a spike differs"
                else:
                    scale = max(1.0, float(want.abs().max()))
                    err = float(np.abs(got - want.numpy()).max())
                    assert err <= 1e-5 * scale, f"step {t}: {name}: max difference {err:.3g} at magnitude {scale:.3g}"
            spikes.append(float(state[-1].s.mean()))
            ort_in, flat, torch_in = out[0], out[1:], pred
    return spikes


@pytest.mark.parametrize("neuron", ["stc_lif", "lif"])
def test_onnx_step_equals_pytorch_over_20_steps(neuron, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    ckpt = write_checkpoint(tmp_path / f"{neuron}.pt", neuron)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "x"), "--onnx"]) == 0
    assert "onnxruntime check of step.onnx: max |ONNX - PyTorch|" in capsys.readouterr().out
    proto = onnx.load(tmp_path / "x" / "step.onnx")
    assert proto.opset_import[0].version >= 17
    ops = {n.op_type for n in proto.graph.node}
    assert {"GreaterOrEqual", "Cast"} <= ops and not any(n.domain for n in proto.graph.node)  # no PythonOp
    # every state field is an input, in a stable order, even one the update never reads (LIF's spikes)
    assert [v.name for v in proto.graph.input] == ["frame", "state_l0_v", "state_l0_s"]
    assert [v.name for v in proto.graph.output] == ["prediction", "next_state_l0_v", "next_state_l0_s"]
    spikes = _ort_vs_torch(tmp_path / "x")
    assert 0 < max(spikes) and min(spikes) < 1  # spikes happen: the comparison covers the threshold
    _ort_vs_torch(tmp_path / "x", steps=4, batch=2)  # the batch axis is dynamic


def test_onnx_without_its_packages_is_one_line(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    line = one_error(capsys, main(["export", str(ckpt), "--out", str(tmp_path / "o"), "--onnx"]))
    assert 'pip install "stcsnn[onnx]"' in line and "onnxruntime" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- hubconf
def _hubconf():
    return load_file(ROOT / "hubconf.py", "stcsnn_hubconf_test")


def test_hubconf_has_an_entry_point_per_neuron_and_a_loader(exported):
    hub = _hubconf()
    assert hub.dependencies == ["torch"]
    for name, _ in stcsnn.neurons.list_neurons():
        assert callable(getattr(hub, name)), name
    model = torch.hub.load(str(ROOT), "stc_lif", source="local", hidden_channels=[16], kernel_size=3,
                           frame_shape=[1, 16, 16])
    assert model.neuron == "stc_lif" and model.hidden_channels == [16] and model.cells[0].kernel_size == 3
    assert torch.hub.load(str(ROOT), "glif", source="local", frame_shape=[1, 16, 16]).neuron == "glif"
    with pytest.raises(StcsnnError, match="no neuron= override"):
        hub.lif(neuron="glif")
    loaded = torch.hub.load(str(ROOT), "load", str(exported), source="local")
    reference, _ = load_model(exported)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))


@pytest.mark.slow  # a fresh interpreter (importing torch) is the only way to see what hubconf itself imports
def test_hubconf_imports_nothing_heavy():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import hubconf; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'safetensors', 'huggingface_hub', 'onnx', "
            "'onnxruntime', 'yaml', 'matplotlib', 'PIL'}))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_failed_forced_export_leaves_the_previous_export_as_it_was(ckpt, exported, tmp_path, monkeypatch,
                                                                      capsys):
    import stcsnn.io
    from stcsnn.io import WriteError

    out = _copy_export(exported, tmp_path / "x")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = stcsnn.io.atomic_write_bytes, []

    def disk_full_on_the_second_file(path, data):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise WriteError(f"cannot write {path}: No space left on device; nothing was written")
        real(path, data)

    monkeypatch.setattr(stcsnn.io, "atomic_write_bytes", disk_full_on_the_second_file)
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    line = one_error(capsys, main(["export", str(other), "--out", str(out), "--force"]))
    assert "No space left on device" in line and calls[0].endswith(".staged")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staged leftovers either


def test_forced_export_over_a_graph_without_onnx_packages_refuses_naming_it(ckpt, exported, tmp_path, monkeypatch,
                                                                             capsys):
    """--force (and --force --push) without --onnx into a folder with step.onnx, the onnx extra missing: the graph
    cannot be regenerated, so nothing is changed (rather than a graph of other weights, or none)."""
    out = _copy_export(exported, tmp_path / "x")
    (out / "step.onnx").write_bytes(b"the graph of the weights being replaced")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    pushes = [[]] + ([["--push", "user/repo"]] if importlib.util.find_spec("huggingface_hub") else [])
    for push in pushes:
        line = one_error(capsys, main(["export", str(other), "--out", str(out), "--force", *push]))
        assert "holds step.onnx of an earlier export, which must be regenerated for the new weights" in line
        assert 'pip install "stcsnn[onnx]"' in line and "remove step.onnx first" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_refuses_a_given_frame_shape_the_model_cannot_read(tmp_path):
    from stcsnn.errors import CheckpointError
    from stcsnn.io import atomic_torch_save
    from stcsnn.models import build_model
    from stcsnn.models.export import export
    from stcsnn.models.loading import model_checkpoint

    cfg = make_config({"neuron": "lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
                       "frame_shape": [1, 16, 16]})
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"frame_shape \[3, 16, 16\] has 3 channel\(s\), the model .* reads 1"):
        export(tmp_path / "m.pt", tmp_path / "out", frame_shape=[3, 16, 16])
    assert not (tmp_path / "out").exists()


def test_norm_eps_travels_through_checkpoint_export_and_onnx(tmp_path, capsys):
    """A model trained with ``norm_eps`` keeps it: the checkpoint's model, the exported folder's model and the
    ONNX graph (its normalisation nodes' ``epsilon``) all use it, and ONNX Runtime agrees with PyTorch."""
    onnx = pytest.importorskip("onnx")
    cfg = tiny_config("stc_lif", norm_eps=0.25)
    torch.manual_seed(0)
    path = tmp_path / "eps.pt"
    atomic_torch_save(model_checkpoint(stcsnn.build_model(cfg), cfg), path)
    for source in (path, tmp_path / "x"):
        if source != path:
            assert main(["export", str(path), "--out", str(source), "--onnx"]) == 0
        model, loaded = load_model(source)
        assert loaded.norm_eps == 0.25
        norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and {m.eps for m in norms} == {0.25}
    assert "onnxruntime check of step.onnx: max |ONNX - PyTorch|" in capsys.readouterr().out
    proto = onnx.load(tmp_path / "x" / "step.onnx")
    eps = [a.f for n in proto.graph.node if "Normalization" in n.op_type for a in n.attribute if a.name == "epsilon"]
    assert eps and all(abs(e - 0.25) < 1e-7 for e in eps)
    _ort_vs_torch(tmp_path / "x", steps=6)
