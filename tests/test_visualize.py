"""stcsnn visualize: PNG grid + GIFs from a run directory and from predict outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stcsnn import viz
from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.io import atomic_torch_save
from stcsnn.models import build_model
from stcsnn.models.loading import model_checkpoint
from stcsnn.viz import grid_figure, heatmap, prediction_grid

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    w, h = struct.unpack(">II", Path(path).read_bytes()[16:24])
    return h, w


@contextlib.contextmanager
def read_only_folder(path: Path, monkeypatch) -> Iterator[str]:
    """``path`` as a folder nothing can be written into; yields how. Root ignores permission bits, so as root
    it is a read-only tmpfs mount (where ``mount`` works), else the OS call that probes it is made to fail."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield "chmod"
        finally:
            path.chmod(0o755)
        return
    if shutil.which("mount") and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0:
        try:
            yield "mount"
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        return
    real = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own keyword)
        if dir is not None and Path(dir).resolve() == path.resolve():
            raise OSError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    yield "monkeypatch"


def texts(fig) -> list[str]:
    """Every text drawn in a matplotlib figure: figure texts, titles, axis labels, tick labels, annotations."""
    from matplotlib.text import Text

    viz.figure_rgb(fig)  # draw once: tick labels exist only after a draw
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def rows(fig) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(row label, (top, left, bottom, right) in pixels of the rendered image) for each labelled row, top down."""
    viz.figure_rgb(fig)
    height = fig.bbox.height
    out = []
    for ax in fig.axes:
        if ax.get_label() == "grid row":
            b = ax.get_window_extent()
            out.append((ax.get_ylabel(), (round(height - b.y1), round(b.x0), round(height - b.y0), round(b.x1))))
    return sorted(out, key=lambda r: r[1][0])


def first_frame(image: np.ndarray, box: tuple[int, int, int, int], margin: int = 4) -> np.ndarray:
    """Pixels well inside the first frame of a row (frames are square, as tall as the row)."""
    top, left, bottom, _ = box
    return image[top + margin:bottom - margin, left + margin:left + (bottom - top) - margin]


@pytest.fixture
def grid_spy(monkeypatch):
    """Records what ``stcsnn visualize`` hands to ``prediction_grid`` (and the image it got back)."""
    calls = []
    real = viz.prediction_grid

    def spy(inputs, truth, pred, **kwargs):
        image = real(inputs, truth, pred, **kwargs)
        calls.append({"inputs": inputs, "truth": truth, "pred": pred, "image": image, **kwargs})
        return image
    monkeypatch.setattr(viz, "prediction_grid", spy)
    return calls


def one_error(capsys, rc: int) -> str:
    out = capsys.readouterr()
    assert rc == 2, out
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]


def _run_dir(tmp_path):
    cfg = make_config({
        "dataset": "embedded", "neuron": "stc_lif", "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
        "frame_shape": [1, 32, 32], "input_frames": 3, "output_frames": 2, "eval_batch_size": 4,
        "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 4, "test_samples": 4},
    })
    torch.manual_seed(0)
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), tmp_path / "run" / "best.pt")
    return tmp_path / "run"


def test_visualize_run_directory(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["visualize", str(run), "--samples", "0,2"]) == 0
    png = (run / "visualize_grid.png").read_bytes()
    assert png.startswith(PNG)
    for i in (0, 2):
        assert (run / f"visualize_sample{i}.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert (run / "visualize_grid.png").stat().st_mode & 0o044  # readable by others, like any output file


def test_visualize_predict_output_with_two_channel_heatmaps(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.random((2, 4, 2, 16, 16), dtype=np.float32)
    np.save(tmp_path / "in.npy", inputs)
    np.save(tmp_path / "pred.npy", inputs[:, ::-1].copy())
    assert main(["visualize", str(tmp_path / "pred.npy"), "--input", str(tmp_path / "in.npy"), "--samples", "1"]) == 0
    assert (tmp_path / "pred_grid.png").read_bytes().startswith(PNG)
    assert (tmp_path / "pred_sample1.gif").exists()


def test_visualize_reads_the_inputs_in_every_layout_predict_reads(tmp_path, grid_spy):
    """(N, T, H, W) grey uint8 inputs, as the README writes frames.npy for predict, are (N, T, 1, H, W)."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (2, 4, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "in.npy", grey)
    np.save(tmp_path / "pred.npy", rng.random((2, 3, 1, 16, 16), dtype=np.float32))
    assert main(["visualize", str(tmp_path / "pred.npy"), "--input", str(tmp_path / "in.npy"), "--samples", "0,1"]) == 0
    inputs = grid_spy[-1]["inputs"]
    np.testing.assert_array_equal(inputs, grey[:, :, None].astype(np.float32) / 255.0)


def test_grid_rows_hold_the_frames_they_are_labelled_with():
    inputs = np.zeros((1, 3, 1, 8, 8), np.float32)
    truth = np.ones((1, 2, 1, 8, 8), np.float32)
    fig = grid_figure(inputs, truth, truth * 0.5)
    image = viz.figure_rgb(fig)
    labelled = rows(fig)
    assert [label for label, _ in labelled] == ["input", "truth", "prediction", "|error|"]
    box = dict(labelled)
    assert (first_frame(image, box["input"]) == 0).all()  # black
    assert (first_frame(image, box["truth"]) == 255).all()  # white
    assert (first_frame(image, box["prediction"]) == 128).all()  # mid grey (0.5 * 255 rounded)
    # |error| = 0.5 everywhere, the largest error of the sample: the top of the error colour map
    assert (first_frame(image, box["|error|"]) == heatmap(np.array(1.0), viz.ERROR_CMAP)).all()
    np.testing.assert_array_equal(heatmap(np.array([0.0, 1.0])), [[68, 1, 84], [253, 231, 37]])  # viridis' ends


def test_grid_explains_itself_labels_times_title_and_error_scale():
    rng = np.random.default_rng(0)
    inputs = rng.random((2, 3, 1, 16, 16), dtype=np.float32)
    truth = rng.random((2, 2, 1, 16, 16), dtype=np.float32)
    pred = np.clip(truth + 0.25, 0, 1)
    fig = grid_figure(inputs, truth, pred, title="stc_lif · runs/x/best.pt\nMSE 1.5", sample_labels=["sample 4",
                                                                                                   "sample 7"])
    words = texts(fig)
    for label in ("input", "truth", "prediction", "|error|", "t = 1", "t = 3", "t = 4", "t = 5", "sample 4",
                  "sample 7", "stc_lif · runs/x/best.pt\nMSE 1.5"):
        assert label in words, (label, words)
    assert "t = 6" not in words  # 3 inputs + 2 predicted frames
    assert [label for label, _ in rows(fig)].count("|error|") == 2  # one error row per sample ...
    bars = [ax for ax in fig.axes if ax.get_label() == "error colour bar"]
    assert len(bars) == 2  # ... each with a colour bar, all ending at the largest error of the whole figure
    top = max(float(np.abs(truth - pred).max()), 1e-8)
    assert [bar.get_ylim()[1] for bar in bars] == pytest.approx([top, top], rel=1e-6)
    assert f"{top:.2g}" in words

    plain = texts(grid_figure(inputs, None, pred))
    assert "truth" not in plain and "|error|" not in plain and "sample 0" in plain and "t = 4" in plain
    with pytest.raises(viz.StcsnnError, match="sample_labels"):
        grid_figure(inputs, truth, pred, sample_labels=["only one"])


def test_one_error_scale_per_figure_with_a_labelled_colour_bar():
    """Samples with errors 0.8, 0.4 and 0 everywhere: one colour scale (0 .. 0.8) for the whole figure, so the
    second sample's error is drawn at the middle of the colour map and the third at its bottom."""
    truth = np.zeros((3, 2, 1, 8, 8), np.float32)
    pred = truth + np.array([0.8, 0.4, 0.0], np.float32)[:, None, None, None, None]
    fig = grid_figure(np.zeros((3, 2, 1, 8, 8), np.float32), truth, pred)
    bars = [ax for ax in fig.axes if ax.get_label() == "error colour bar"]
    assert [bar.get_ylim() for bar in bars] == [pytest.approx((0.0, 0.8))] * 3
    assert all(bar.get_ylabel().strip() for bar in bars), [bar.get_ylabel() for bar in bars]
    image = viz.figure_rgb(fig)
    errors = [box for label, box in rows(fig) if label == "|error|"]
    for box, expected in zip(errors, (1.0, 0.5, 0.0)):
        assert (first_frame(image, box) == heatmap(np.array(expected), viz.ERROR_CMAP)).all(), expected
    # without an error anywhere the scale is 0 .. 1 (never a division by zero)
    still = grid_figure(np.zeros((1, 2, 1, 8, 8), np.float32), truth[:1], truth[:1])
    assert [ax.get_ylim() for ax in still.axes if ax.get_label() == "error colour bar"] == [(0.0, 1.0)]


def test_grid_png_decodes_and_grows_with_samples_rows_and_frames(tmp_path):
    from PIL import Image

    def size(n: int, t_in: int = 3, with_truth: bool = True, title: str | None = None) -> tuple[int, int]:
        inputs = np.zeros((n, t_in, 1, 16, 16), np.float32)
        pred = np.full((n, 2, 1, 16, 16), 0.5, np.float32)
        # the grid as the commands write it (write_samples: the grid, then one GIF per sample)
        path, *_ = viz.write_samples(tmp_path, f"g{n}{t_in}{with_truth}{bool(title)}", inputs,
                                     pred if with_truth else None, pred, range(n), title=title)
        with Image.open(path) as im:
            im.load()
            assert im.format == "PNG" and im.mode == "RGB"
            return im.height, im.width

    h1, w1 = size(1)
    h2, w2 = size(2)
    h3, w3 = size(3)
    assert w1 == w2 == w3 and h1 < h2 < h3 and h3 - h2 == h2 - h1  # every sample adds the same block
    hp, wp = size(1, with_truth=False)
    assert wp == w1 and hp < h1  # no truth, no error rows
    assert size(1, t_in=6)[1] > w1 and size(1, t_in=6)[0] == h1  # more frames: wider, not taller
    assert size(1, title="a title")[0] > h1
    assert prediction_grid(np.zeros((1, 3, 1, 16, 16)), None, np.ones((1, 2, 1, 16, 16))).shape == (hp, wp, 3)


def test_two_channel_frames_are_heatmaps_per_channel_with_a_value_scale():
    rng = np.random.default_rng(2)
    inputs = rng.random((1, 2, 2, 16, 16), dtype=np.float32)
    truth = rng.random((1, 2, 2, 16, 16), dtype=np.float32)
    fig = grid_figure(inputs, truth, truth[:, ::-1].copy())
    image = viz.figure_rgb(fig)
    labelled = rows(fig)
    assert [label for label, _ in labelled] == ["input\nchannel 0", "truth\nchannel 0", "prediction\nchannel 0",
                                                "input\nchannel 1", "truth\nchannel 1", "prediction\nchannel 1",
                                                "|error|\nmax over\nchannels"]
    assert "value" in texts(fig) and [ax.get_label() for ax in fig.axes].count("value colour bar") == 1
    top, left, _, _ = dict(labelled)["truth\nchannel 1"]
    k = (dict(labelled)["truth\nchannel 1"][2] - top - 2) // 16  # integer upscaling inside a 1 px border
    # pixel (0, 0) of truth channel 1, frame 0, in the frames' colour map
    np.testing.assert_array_equal(image[top + 1 + k // 2, left + 1 + k // 2], heatmap(truth[0, 0, 1, 0, 0]))


def test_gif_has_one_labelled_frame_per_time_step(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    inputs, truth = rng.random((3, 1, 16, 16), dtype=np.float32), rng.random((2, 1, 16, 16), dtype=np.float32)
    viz.write_gif(tmp_path / "a.gif", inputs, truth, truth * 0.5, title="sample 0")
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 5
        two_panels = im.size
    viz.write_gif(tmp_path / "b.gif", inputs, None, truth)
    with Image.open(tmp_path / "b.gif") as im:
        assert im.n_frames == 5 and im.size[0] < two_panels[0]  # without truth: the prediction panel alone
    frames = viz.gif_frames(inputs, truth, truth * 0.5)
    assert len(frames) == 5 and all(f.dtype == np.uint8 and f.ndim == 3 for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # the header (t = 1, t = 2) and the frames change


def test_missing_viz_extra_is_one_line_naming_it_and_other_import_errors_pass(tmp_path, frames, capsys,
                                                                              monkeypatch):
    import builtins
    import sys

    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if not installed
    line = one_error(capsys, visualize(tmp_path, pred, "--samples", "0"))
    assert 'pip install "stcsnn[viz]"' in line and "matplotlib" in line
    assert not (tmp_path / "pred_grid.png").exists()

    from stcsnn.train.evaluate import write_report

    samples = {"inputs": np.zeros((1, 3, 1, 16, 16)), "truth": np.ones((1, 2, 1, 16, 16)),
               "pred": np.ones((1, 2, 1, 16, 16))}
    paths = write_report(tmp_path / "rep", {"mse": 1.0}, {"neuron": "lif"}, samples)
    assert [p.name for p in paths] == ["report.json", "report.md"]  # the numbers are written, the picture noted
    assert 'note: no predictions.png' in capsys.readouterr().err
    monkeypatch.undo()

    real = builtins.__import__

    def broken(name, *args, **kwargs):  # matplotlib present but one of its own dependencies missing
        if name == "matplotlib":
            raise ModuleNotFoundError("No module named 'kiwisolver'", name="kiwisolver")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ModuleNotFoundError, match="kiwisolver"):
        viz.require_viz()


@pytest.mark.parametrize("args, message", [
    (["--samples", "9"], "out of range"),
    (["--samples", "a,b"], "comma-separated integers"),
    (["--samples", ","], "comma-separated integers"),
    (["--samples", ""], "comma-separated integers"),
    (["--samples", "-1"], "indices >= 0"),
    (["--samples", "1,1"], "distinct"),
])
def test_visualize_errors(tmp_path, capsys, args, message):
    run = _run_dir(tmp_path)
    assert main(["visualize", str(run), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


# --- predict outputs: unclipped, other lengths, no truth -------------------------------------------------------

@pytest.fixture
def frames(tmp_path):
    """in.npy (2, 3, 1, 16, 16) in [0, 1], and ``save(name, arr)`` for more files next to it."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "in.npy", rng.random((2, 3, 1, 16, 16), dtype=np.float32))

    def save(name, arr):
        np.save(tmp_path / name, arr)
        return str(tmp_path / name)
    save.rng = rng
    return save


def visualize(tmp_path, pred, *extra):
    return main(["visualize", pred, "--input", str(tmp_path / "in.npy"), *extra])


def test_visualize_accepts_unclipped_predictions_and_says_so(tmp_path, frames, capsys, grid_spy):
    pred = frames.rng.random((2, 2, 1, 16, 16), dtype=np.float32) * 1.5 - 0.25
    pred[0, 0, 0, 0, :2] = [-0.25, 1.3]
    truth = frames("truth.npy", np.clip(pred, 0, 1))
    assert visualize(tmp_path, frames("pred.npy", pred), "--truth", truth, "--samples", "0,1") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "note: prediction values in [-0.25, 1.3] clipped to [0, 1] for display" in out[0]
    (call,) = grid_spy
    assert png_size(tmp_path / "pred_grid.png") == call["image"].shape[:2]
    assert call["sample_labels"] == ["sample 0", "sample 1"] and "metrics of the samples shown" in call["title"]
    # drawn clipped: the prediction handed to the grid is the truth (the clipped prediction), so the error is 0
    np.testing.assert_array_equal(call["pred"], call["truth"])
    fig = grid_figure(call["inputs"], call["truth"], call["pred"])
    image = viz.figure_rgb(fig)
    for label, box in rows(fig):
        if label == "|error|":
            assert (first_frame(image, box) == heatmap(np.array(0.0), viz.ERROR_CMAP)).all()  # flat: no error
    for bad in (np.nan, np.inf):
        pred[1, 1, 0, 3, 3] = bad
        rc = visualize(tmp_path, frames("nan.npy", pred))
        assert "NaN or infinite" in one_error(capsys, rc)


def test_visualize_inputs_and_truth_keep_the_strict_range(tmp_path, frames, capsys):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    truth = frames("truth.npy", np.full((2, 2, 1, 16, 16), 1.5, np.float32))
    line = one_error(capsys, visualize(tmp_path, pred, "--truth", truth))
    assert "truth.npy" in line and "expected [0, 1]" in line
    frames("in.npy", np.full((2, 3, 1, 16, 16), -0.5, np.float32))
    assert "in.npy" in one_error(capsys, visualize(tmp_path, pred))
    assert not (tmp_path / "pred_grid.png").exists()


@pytest.mark.parametrize("t_truth", [1, 4])
def test_visualize_truth_of_another_length_compares_the_overlap(tmp_path, frames, capsys, t_truth, grid_spy):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    truth = frames("truth.npy", np.ones((2, t_truth, 1, 16, 16), np.float32))
    assert visualize(tmp_path, pred, "--truth", truth, "--samples", "1") == 0
    t = min(2, t_truth)
    assert f"truth has {t_truth} frames, the prediction 2: comparing the first {t}" in capsys.readouterr().out
    (call,) = grid_spy
    assert call["truth"].shape == call["pred"].shape == (1, t, 1, 16, 16) and call["inputs"].shape[1] == 3
    assert png_size(tmp_path / "pred_grid.png") == call["image"].shape[:2]
    assert (tmp_path / "pred_sample1.gif").exists()


def test_visualize_truth_of_another_frame_shape_is_one_line(tmp_path, frames, capsys):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    truth = frames("truth.npy", np.ones((2, 2, 1, 8, 8), np.float32))
    assert "same shape" in one_error(capsys, visualize(tmp_path, pred, "--truth", truth))


def test_visualize_without_truth_has_no_truth_or_error_rows(tmp_path, frames, capsys, grid_spy):
    pred = frames("pred.npy", np.full((2, 4, 1, 16, 16), 0.5, np.float32))
    assert visualize(tmp_path, pred, "--samples", "0,1") == 0
    assert "note:" not in capsys.readouterr().out  # values in [0, 1]: nothing clipped, nothing to say
    (call,) = grid_spy
    assert call["truth"] is None and png_size(tmp_path / "pred_grid.png") == call["image"].shape[:2]
    fig = grid_figure(np.zeros((1, 3, 1, 8, 8)), None, np.ones((1, 2, 1, 8, 8)))
    image = viz.figure_rgb(fig)
    labelled = rows(fig)
    assert [label for label, _ in labelled] == ["input", "prediction"]  # input + prediction rows only
    assert (first_frame(image, labelled[0][1]) == 0).all() and (first_frame(image, labelled[1][1]) == 255).all()


def test_visualize_into_a_read_only_folder_is_one_line(tmp_path, frames, capsys, monkeypatch):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    ro = tmp_path / "ro"
    with read_only_folder(ro, monkeypatch):
        line = one_error(capsys, visualize(tmp_path, pred, "--out", str(ro)))
        assert str(ro) in line and "cannot write" in line
        assert list(ro.iterdir()) == []


def test_visualize_run_directory_read_only_and_empty_samples(tmp_path, capsys, monkeypatch):
    run = _run_dir(tmp_path)
    before = (run / "best.pt").read_bytes()
    assert "comma-separated integers" in one_error(capsys, main(["visualize", str(run), "--samples", ","]))
    with read_only_folder(tmp_path / "ro", monkeypatch):
        one_error(capsys, main(["visualize", str(run), "--out", str(tmp_path / "ro"), "--samples", "0"]))
    assert (run / "best.pt").read_bytes() == before


# --- sources and outputs: export folders, folders named like checkpoints, --force -----------------------------

def test_visualize_an_export_folder_like_predict_and_eval(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "exp")]) == 0
    assert main(["visualize", str(run), "--samples", "1"]) == 0
    assert main(["visualize", str(tmp_path / "exp"), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'exp' / 'visualize_grid.png'}" in out  # into the export folder, as into a run folder
    # the same weights, the same test samples: the same GIF (the grid's title names the source, so it differs)
    assert (tmp_path / "exp" / "visualize_sample1.gif").read_bytes() == (run / "visualize_sample1.gif").read_bytes()
    assert png_size(tmp_path / "exp" / "visualize_grid.png") == png_size(run / "visualize_grid.png")


def test_a_folder_named_like_a_checkpoint_is_one_line(tmp_path, capsys):
    run = _run_dir(tmp_path)
    (run / "best.pt").unlink()
    (run / "last.pt").mkdir()
    line = one_error(capsys, main(["visualize", str(run)]))
    assert f"{str(run / 'last.pt')!r} is a folder, not a checkpoint file" in line
    line = one_error(capsys, main(["visualize", str(run / "last.pt")]))
    assert "last.pt" in line and "is a folder without config.json" in line and "not found" not in line
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"] and not any((run / "last.pt").iterdir())


def test_visualize_never_overwrites_its_pictures_without_force(tmp_path, frames, capsys):
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    assert visualize(tmp_path, pred, "--samples", "0,1") == 0
    mine = tmp_path / "pred_sample1.gif"
    mine.write_bytes(b"a GIF the user edited")
    grid = (tmp_path / "pred_grid.png").read_bytes()
    line = one_error(capsys, visualize(tmp_path, pred, "--samples", "0,1"))
    assert f"{str(tmp_path / 'pred_grid.png')!r} already exists" in line and "--force" in line
    (tmp_path / "pred_grid.png").unlink()
    line = one_error(capsys, visualize(tmp_path, pred, "--samples", "1"))
    assert f"{str(mine)!r} already exists" in line
    assert mine.read_bytes() == b"a GIF the user edited" and not (tmp_path / "pred_grid.png").exists()
    assert visualize(tmp_path, pred, "--samples", "0,1", "--force") == 0
    assert (tmp_path / "pred_grid.png").read_bytes() == grid and mine.read_bytes()[:6] == b"GIF89a"
    # the run-folder path checks before the evaluation, and a folder where a picture goes is refused too
    run = _run_dir(tmp_path)
    (run / "visualize_sample0.gif").mkdir()
    line = one_error(capsys, main(["visualize", str(run), "--samples", "0", "--force"]))
    assert "visualize_sample0.gif' is a folder" in line and not (run / "visualize_grid.png").exists()


def test_pictures_are_written_through_the_atomic_writer(tmp_path, frames, monkeypatch):
    import stcsnn.io

    written, real = [], stcsnn.io.atomic_write_bytes
    monkeypatch.setattr(stcsnn.io, "atomic_write_bytes", lambda path, data: (written.append(Path(path).name),
                                                                             real(path, data)))
    pred = frames("pred.npy", np.full((2, 2, 1, 16, 16), 0.5, np.float32))
    assert visualize(tmp_path, pred, "--samples", "1,0") == 0
    assert written == ["pred_grid.png", "pred_sample1.gif", "pred_sample0.gif"]
