"""stcsnn predict: clipped output by default, --no-clip, --force, empty inputs, unwritable folders, and the
README's predict -> visualize workflow on a raw (unclipped) prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import one_error
from test_visualize import png_size, read_only_folder

from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.io import atomic_torch_save
from stcsnn.models import build_model
from stcsnn.models.loading import load_model, model_checkpoint

T_IN, T_OUT = 3, 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny checkpoint (untrained outputs overshoot [0, 1], which is what these tests need)."""
    cfg = make_config({
        "dataset": "embedded", "neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
        "frame_shape": [1, 16, 16], "input_frames": T_IN, "output_frames": T_OUT,
        "data_options": {"canvas_size": 16, "num_samples": 4, "val_samples": 2, "test_samples": 2},
    })
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), path)
    return path


@pytest.fixture
def inp(tmp_path):
    x = np.random.default_rng(0).random((3, T_IN, 1, 16, 16), dtype=np.float32)
    np.save(tmp_path / "in.npy", x)
    return x


def predict(ckpt, inp_path, out, *extra) -> int:
    return main(["predict", "--checkpoint", str(ckpt), "--input", str(inp_path), "--output", str(out),
                 "--device", "cpu", *extra])




def raw_prediction(ckpt, x) -> np.ndarray:
    model, _ = load_model(ckpt)
    with torch.no_grad():
        return model(torch.from_numpy(x), n_future=T_OUT).numpy()


def test_predict_clips_by_default_and_no_clip_keeps_the_raw_values(ckpt, inp, tmp_path, capsys):
    raw = raw_prediction(ckpt, inp)
    assert raw.min() < 0 or raw.max() > 1  # the premise: this model overshoots
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "p.npy") == 0
    assert "clipped to [0, 1] (--no-clip keeps them)" in capsys.readouterr().out
    p = np.load(tmp_path / "p.npy")
    assert p.dtype == np.float32 and p.shape == (3, T_OUT, 1, 16, 16)
    assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_allclose(p, np.clip(raw, 0, 1), atol=1e-5)
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "raw.npy", "--no-clip") == 0
    np.testing.assert_allclose(np.load(tmp_path / "raw.npy"), raw, atol=1e-5)


def test_predict_never_overwrites_without_force(ckpt, inp, tmp_path, capsys):
    out = tmp_path / "p.npy"
    np.save(out, np.zeros((1, 1), np.float32))
    before = out.read_bytes()
    line = one_error(capsys, predict(ckpt, tmp_path / "in.npy", out))
    assert "already exists" in line and "--force" in line
    assert out.read_bytes() == before
    assert predict(ckpt, tmp_path / "in.npy", out, "--force") == 0
    assert np.load(out).shape == (3, T_OUT, 1, 16, 16)


@pytest.mark.parametrize("shape", [(0, T_IN, 1, 16, 16), (2, 0, 1, 16, 16), (0, 1, 16, 16)])
def test_predict_empty_inputs_are_one_line(ckpt, tmp_path, capsys, shape):
    np.save(tmp_path / "empty.npy", np.zeros(shape, np.float32))
    line = one_error(capsys, predict(ckpt, tmp_path / "empty.npy", tmp_path / "p.npy"))
    assert "empty.npy" in line and "at least one" in line
    assert not (tmp_path / "p.npy").exists()


def test_predict_into_a_read_only_folder_is_one_line(ckpt, inp, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    with read_only_folder(ro, monkeypatch):
        line = one_error(capsys, predict(ckpt, tmp_path / "in.npy", ro / "p.npy"))
        assert "cannot write" in line and str(ro) in line
        assert list(ro.iterdir()) == []


def test_readme_workflow_predict_then_visualize_a_raw_prediction(ckpt, inp, tmp_path, capsys):
    """predict (raw, --no-clip) -> visualize without truth, and the default (clipped) output too."""
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "raw.npy", "--no-clip") == 0
    raw = np.load(tmp_path / "raw.npy")
    capsys.readouterr()
    assert main(["visualize", str(tmp_path / "raw.npy"), "--input", str(tmp_path / "in.npy"), "--samples",
                 "0,2"]) == 0
    out = capsys.readouterr().out
    assert f"note: prediction values in [{raw[[0, 2]].min():.3g}, {raw[[0, 2]].max():.3g}] clipped" in out
    # without --truth: per sample an input row and a prediction row (the grid of these arrays, clipped)
    from stcsnn.viz import grid_title, prediction_grid

    title = grid_title(None, tmp_path / "raw.npy", None, f"inputs {tmp_path / 'in.npy'}")
    grid = prediction_grid(inp[[0, 2]], None, np.clip(raw[[0, 2]], 0, 1), title, ["sample 0", "sample 2"])
    assert png_size(tmp_path / "raw_grid.png") == grid.shape[:2]
    assert (tmp_path / "raw_sample2.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "p.npy") == 0
    assert main(["visualize", str(tmp_path / "p.npy"), "--input", str(tmp_path / "in.npy"), "--samples", "1"]) == 0
    assert "note:" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- --stream
def stream_reference(ckpt, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(model.step fed frame by frame, the rollout's forecast after each prefix 0..t) for inputs ``x``."""
    model, _ = load_model(ckpt)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        state, steps = None, []
        for t in range(x.shape[1]):
            pred, state = model.step(xt[:, t], state)
            steps.append(pred)
        prefixes = [model(xt[:, :t + 1], n_future=1)[:, 0] for t in range(x.shape[1])]
    return torch.stack(steps, 1).numpy(), torch.stack(prefixes, 1).numpy()


def test_predict_stream_writes_the_forecast_after_each_input_frame(ckpt, inp, tmp_path, capsys):
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "s.npy", "--stream", "--no-clip", "--batch-size", "2") == 0
    assert "the forecast of the next frame after each of 3 input frames" in capsys.readouterr().out
    got = np.load(tmp_path / "s.npy")
    assert got.dtype == np.float32 and got.shape == inp.shape  # (N, T_in, C, H, W)
    steps, prefixes = stream_reference(ckpt, inp)
    np.testing.assert_array_equal(got, steps)
    # [n, t] is what the model forecasts for frame t+1 from frames 0..t (the rollout batches the prefix: rounding)
    np.testing.assert_allclose(got, prefixes, rtol=0, atol=1e-5)
    assert not np.allclose(got[:, 0], got[:, -1])  # the forecasts do move with the frames seen
    # the last running forecast is the first frame a plain predict forecasts
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "p.npy", "--no-clip") == 0
    np.testing.assert_allclose(got[:, -1], np.load(tmp_path / "p.npy")[:, 0], rtol=0, atol=1e-5)
    # clipped by default, like predict
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "c.npy", "--stream") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.clip(steps, 0, 1))


def test_predict_stream_reads_the_input_memory_mapped_one_frame_at_a_time(ckpt, tmp_path, monkeypatch):
    import stcsnn.data.formats as formats

    x = (np.random.default_rng(1).random((3, T_IN, 1, 16, 16)) * 255).astype(np.uint8)
    np.save(tmp_path / "u8.npy", x)
    loads, reads = [], []
    real_load, real_open = np.load, formats.open_frames

    def spy_load(path, *args, **kwargs):
        loads.append((str(path), kwargs.get("mmap_mode")))
        return real_load(path, *args, **kwargs)

    class Recording:
        def __init__(self, arr):
            self.arr, self.shape, self.dtype = arr, arr.shape, arr.dtype

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, key):
            reads.append(key)
            return self.arr[key]

    monkeypatch.setattr(np, "load", spy_load)
    monkeypatch.setattr(formats, "open_frames", lambda *a, **kw: Recording(real_open(*a, **kw)))
    assert predict(ckpt, tmp_path / "u8.npy", tmp_path / "s.npy", "--stream", "--no-clip", "--batch-size", "2") == 0
    assert (str(tmp_path / "u8.npy"), "r") in loads
    # per batch of sequences (2, then 1), frame t alone: never the whole array
    assert reads == [(slice(i, i + 2), t) for i in (0, 2) for t in range(T_IN)]
    monkeypatch.undo()
    steps, _ = stream_reference(ckpt, x.astype(np.float32) / 255)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), steps)


def test_predict_stream_errors_are_one_line_and_write_nothing(ckpt, inp, tmp_path, capsys):
    line = one_error(capsys, predict(ckpt, tmp_path / "in.npy", tmp_path / "s.npy", "--stream", "--frames", "2"))
    assert "--frames does not apply" in line
    bad = inp.copy()
    bad[-1, -1, 0, 3, 3] = np.nan  # in the very last frame read: found only at the end of the stream
    np.save(tmp_path / "nan.npy", bad)
    line = one_error(capsys, predict(ckpt, tmp_path / "nan.npy", tmp_path / "s.npy", "--stream"))
    assert "NaN or infinite" in line
    bad[-1, -1, 0, 3, 3] = 1.5
    np.save(tmp_path / "range.npy", bad)
    line = one_error(capsys, predict(ckpt, tmp_path / "range.npy", tmp_path / "s.npy", "--stream"))
    assert "expected [0, 1]" in line
    assert not (tmp_path / "s.npy").exists()
    np.save(tmp_path / "int.npy", np.zeros((1, T_IN, 1, 16, 16), np.int32))
    assert "dtype int32" in one_error(capsys, predict(ckpt, tmp_path / "int.npy", tmp_path / "s.npy", "--stream"))


def test_predict_help_documents_stream(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--stream" in text and "(N, T_in, C, H, W) where [n, t] is the forecast of frame t+1" in text
