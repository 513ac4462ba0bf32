"""stcsnn predict: clipped output by default, --no-clip, --force, empty inputs, unwritable folders, and the
README's predict -> visualize workflow on a raw (unclipped) prediction."""

from __future__ import annotations

import os
import re
import subprocess
import sys

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


# ---------------------------------------------------------------------------------------------- large inputs
def sparse_npy(path, shape, dtype=np.uint8) -> int:
    """A real .npy of ``shape`` whose data is a hole: its header, then ``os.truncate`` to the full size (nothing
    but the header is written, whatever the size). Returns the size in bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": shape})
        offset = f.tell()
    size = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    os.truncate(path, size)
    return size


def untouched(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 3 GiB uint8 .npy of 4 Mi sequences of 3 16x16 frames (sparse: no 3 GB written)."""
    path = tmp_path_factory.mktemp("big") / "big.npy"
    n = 3 * 2**30 // (T_IN * 16 * 16)
    assert sparse_npy(path, (n, T_IN, 1, 16, 16)) > 3 * 2**30
    return path


def test_predict_refuses_a_rollout_larger_than_memory_before_allocating(ckpt, big, tmp_path, capsys):
    from stcsnn.data.formats import human_bytes
    from stcsnn.train.predict import available_memory

    if available_memory(torch.device("cpu")) is None:
        pytest.skip("the memory available is not known on this system")
    before = untouched(big)
    for batch in (16, 1):
        line = one_error(capsys, predict(ckpt, big, tmp_path / "p.npy", "--frames", "100000000", "--batch-size",
                                         str(batch)))
        # at least the 10^8 predicted float32 frames of 1 kB per sequence, said with what is available
        need = re.search(r"needs about ([\d.]+) (GB|TB|PB) of memory; ([\d.]+ [kMGT]?B) is available on cpu", line)
        assert need and float(need[1]) * 1000 ** "GTP".index(need[2][0]) >= batch * 409.6, line
        assert f"predicting {batch} sequence" in line and "lower --frames" in line
        assert "(3 input -> 100000000 predicted frames of 1x16x16)" in line
    # a checkpoint that asks for 10^9 frames itself: the same check, before any frame is predicted
    model, cfg = load_model(ckpt)
    huge = tmp_path / "huge.pt"
    atomic_torch_save(model_checkpoint(model, make_config({**cfg.to_dict(), "output_frames": 10**9})), huge)
    np.save(tmp_path / "in.npy", np.zeros((2, T_IN, 1, 16, 16), np.uint8))
    line = one_error(capsys, predict(huge, tmp_path / "in.npy", tmp_path / "p.npy"))
    assert "3 input -> 1000000000 predicted frames" in line and "lower --frames" in line
    # 20000 frames per sequence fit in memory one batch at a time, but 4 Mi x 20000 frames of 1 kB do not on disk
    line = one_error(capsys, predict(ckpt, big, tmp_path / "p.npy", "--frames", "20000", "--batch-size", "1"))
    out_bytes = (3 * 2**30 // (T_IN * 256)) * 20000 * 256 * 4
    assert f"needs {human_bytes(out_bytes)} on disk" in line and "is free in" in line
    assert not (tmp_path / "p.npy").exists() and untouched(big) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.pt", "in.npy"]


def test_predict_stream_refuses_one_sequence_longer_than_memory(ckpt, tmp_path, capsys):
    from stcsnn.train.predict import available_memory

    free = available_memory(torch.device("cpu"))
    if free is None:
        pytest.skip("the memory available is not known on this system")
    # one sequence whose running forecasts (1 kB float32 each, kept twice) cannot all be held: a sparse file of
    # free / 2 bytes, sized for this machine
    t = free // 512 + 1
    sparse_npy(tmp_path / "long.npy", (1, t, 1, 16, 16))
    line = one_error(capsys, predict(ckpt, tmp_path / "long.npy", tmp_path / "s.npy", "--stream"))
    assert f"predicting 1 sequence at a time ({t} input frames of 1x16x16)" in line
    assert "split the sequences into shorter ones" in line
    assert not (tmp_path / "s.npy").exists()


MEASURE = """
import resource, sys
from stcsnn.cli import main
rc = main(sys.argv[1:])
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux
sys.exit(rc)
"""


def peak_rss_kb(ckpt, inp, out, *extra) -> int:
    args = ["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), "--device", "cpu",
            *extra]
    proc = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split("PEAK")[-1])


@pytest.mark.slow  # two fresh interpreters per case: peak memory is only measurable per process
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kB and madvise are Linux's")
@pytest.mark.parametrize("stream", [False, True])
def test_predict_memory_stays_at_one_batch_whatever_the_input_size(ckpt, tmp_path, stream):
    """16 MB of uint8 input (64 MB as float32, the output 43 MB more): the peak resident memory of predict
    grows by less than 16 MB over that of a 32-sequence input (the whole input converted at once, or the output
    held, would add hundreds of MB; the memory-mapped pages read are released after each batch)."""
    extra = ["--stream"] if stream else []
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (32, T_IN, 1, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "small.npy", small)
    n = 1300
    arr = np.lib.format.open_memmap(tmp_path / "large.npy", "w+", np.uint8, (n, T_IN, 1, 64, 64))
    for i in range(0, n, 32):
        arr[i:i + 32] = small[:len(arr[i:i + 32])]
    arr.flush()
    del arr
    base = peak_rss_kb(ckpt, tmp_path / "small.npy", tmp_path / "s.npy", "--batch-size", "32", *extra)
    peak = peak_rss_kb(ckpt, tmp_path / "large.npy", tmp_path / "l.npy", "--batch-size", "32", *extra)
    assert (tmp_path / "large.npy").stat().st_size > 15.9e6
    assert peak - base < 16_000, (base, peak)
    # the same predictions as the small input's: the file is that input repeated
    got = np.load(tmp_path / "l.npy", mmap_mode="r")
    assert got.shape == (n, T_IN if stream else T_OUT, 1, 16 * 4, 16 * 4)
    np.testing.assert_array_equal(got[32 * 7: 32 * 8], np.load(tmp_path / "s.npy"))


# ---------------------------------------------------------------------------------------------- layouts
def test_predict_reads_every_layout_of_the_npy_dataset(ckpt, inp, tmp_path, capsys):
    """(N, T, H, W), the npy dataset's one-channel layout, predicts what (N, T, 1, H, W) does; (T, 1, H, W) stays
    one sequence, as before."""
    from stcsnn.data.arrays import build_npy

    np.save(tmp_path / "nthw.npy", inp[:, :, 0])
    assert len(build_npy("train", path=str(tmp_path / "nthw.npy"), split_fractions=(0.34, 0.33, 0.33))) == 1
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "a.npy") == 0
    assert predict(ckpt, tmp_path / "nthw.npy", tmp_path / "b.npy") == 0
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    for stream in ([], ["--stream"]):
        assert predict(ckpt, tmp_path / "in.npy", tmp_path / "c.npy", "--force", *stream) == 0
        assert predict(ckpt, tmp_path / "nthw.npy", tmp_path / "d.npy", "--force", *stream) == 0
        assert (tmp_path / "c.npy").read_bytes() == (tmp_path / "d.npy").read_bytes()
    np.save(tmp_path / "tchw.npy", inp[0])
    assert predict(ckpt, tmp_path / "tchw.npy", tmp_path / "e.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), np.load(tmp_path / "a.npy")[:1])
    capsys.readouterr()


def test_predict_layout_errors_are_one_line(tmp_path, capsys):
    cfg = make_config({"neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
                       "frame_shape": [2, 16, 16], "input_frames": T_IN, "output_frames": T_OUT})
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), tmp_path / "two.pt")
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 16, 16), np.float32))
    line = one_error(capsys, predict(tmp_path / "two.pt", tmp_path / "x.npy", tmp_path / "p.npy"))
    assert "shape (4, 3, 16, 16); expected (T, C, H, W) with the model's 2 channels" in line
    np.save(tmp_path / "y.npy", np.zeros((1, 4, 3, 16, 16), np.float32))
    line = one_error(capsys, predict(tmp_path / "two.pt", tmp_path / "y.npy", tmp_path / "p.npy"))
    assert "has 3 channels (shape (1, 4, 3, 16, 16)); the model expects 2" in line
    assert not (tmp_path / "p.npy").exists()


def test_a_failed_forced_predict_keeps_the_previous_output(ckpt, inp, tmp_path, capsys):
    """The NaN is in the last batch: the first batches were written (to a temporary file) when it is found."""
    assert predict(ckpt, tmp_path / "in.npy", tmp_path / "p.npy") == 0
    before = (tmp_path / "p.npy").read_bytes()
    bad = inp.copy()
    bad[-1, -1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    for stream in ([], ["--stream"]):
        line = one_error(capsys, predict(ckpt, tmp_path / "nan.npy", tmp_path / "p.npy", "--force",
                                         "--batch-size", "1", *stream))
        assert "NaN or infinite" in line
        assert (tmp_path / "p.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "nan.npy", "p.npy"]
