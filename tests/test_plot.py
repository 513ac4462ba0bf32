"""stcsnn plot: training curves of run folders (steps.csv / metrics.csv / config.yaml), overlaid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error

from stcsnn.analysis.plot import curves_figure, read_run
from stcsnn.cli import main

METRICS_HEADER = "epoch,step,train_loss,val_mse,val_mae,val_ssim,val_psnr,lr,eta,rate_l0,seconds"


def make_run(root: Path, name: str, neuron: str, seed: int, steps: bool = True, epochs: int = 3,
             per_epoch: int = 5) -> Path:
    """A run folder as `stcsnn train` leaves it: config.yaml, metrics.csv (validation every other epoch) and,
    with ``steps``, steps.csv."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"dataset: embedded\nneuron: {neuron}\nseed: {seed}\n")
    rows = [METRICS_HEADER]
    for e in range(1, epochs + 1):
        val = f"{100 / e},{300 / e},{0.1 * e},{10 + e}" if e % 2 == 0 or e == epochs else ",,,"
        rows.append(f"{e},{e * per_epoch},{0.1 / e},{val},{1e-3 / e},0.5,0.1,2.0")
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    if steps:
        lines = ["step,epoch,loss,lr,p_true,seconds"]
        lines += [f"{s},{(s - 1) // per_epoch},{0.2 / s},{1e-3},{1.0},0.1" for s in range(1, epochs * per_epoch + 1)]
        (run / "steps.csv").write_text("\n".join(lines) + "\n")
    return run




def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_two_runs_overlaid_labelled_by_neuron_and_seed(tmp_path, capsys):
    from PIL import Image

    a = make_run(tmp_path, "a", "stc_lif", 0)
    b = make_run(tmp_path, "b", "lif", 1, steps=False)  # an older run: no steps.csv yet
    out = tmp_path / "plots" / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"{b} has no steps.csv" in printed
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG" and im.width > 800 and im.height > 500

    runs = [read_run(a), read_run(b)]
    assert runs[0].loss_per_step and len(runs[0].loss.x) == 15  # per step, from steps.csv
    assert not runs[1].loss_per_step and runs[1].loss.x.tolist() == [5, 10, 15]  # per epoch, at its step
    np.testing.assert_allclose(runs[1].loss.y, [0.1, 0.05, 0.1 / 3])
    assert runs[0].val["val_mse"].x.tolist() == [10, 15]  # epochs without validation are left out, not zeros
    fig = curves_figure(runs)
    assert legend_texts(fig) == ["stc_lif seed 0", "lif seed 1"]
    titles = [ax.get_title() for ax in fig.axes]
    assert "validation MSE" in titles and "validation SSIM" in titles and "learning rate" in titles


def test_one_run_writes_next_to_it_and_same_labels_get_their_folder(tmp_path, capsys):
    a = make_run(tmp_path, "a", "stc_lif", 0)
    assert main(["plot", str(a)]) == 0
    assert (a / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    b = make_run(tmp_path, "b", "stc_lif", 0)
    assert legend_texts(curves_figure([read_run(a), read_run(b)])) == ["stc_lif seed 0 (a)", "stc_lif seed 0 (b)"]


def test_resumed_and_still_written_steps_csv(tmp_path):
    run = make_run(tmp_path, "r", "lif", 0, steps=False)
    # resumed from step 3 (steps 4-5 logged twice: the later rows win); the last line is still being written
    (run / "steps.csv").write_text("step,epoch,loss,lr,p_true,seconds\n1,0,1.0,1,1,0\n2,0,0.9,1,1,0\n3,0,0.8,1,1,0\n"
                                   "4,0,0.7,1,1,0\n5,0,0.6,1,1,0\n4,0,0.5,1,1,0\n5,0,0.4,1,1,0\n6,1,0.")
    curves = read_run(run)
    assert curves.loss.x.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(curves.loss.y, [1.0, 0.9, 0.8, 0.5, 0.4])
    assert any("still being written" in n for n in curves.notes)


@pytest.mark.parametrize("damage, message", [
    (lambda run: [(run / f).unlink() for f in ("metrics.csv", "steps.csv")], "neither steps.csv nor metrics.csv"),
    (lambda run: (run / "config.yaml").unlink(), "no config.yaml"),
    (lambda run: (run / "config.yaml").write_text("neuron: [oops\n"), "config.yaml"),
    (lambda run: (run / "metrics.csv").write_text("epoch,loss\n1,0.5\n"), "missing step, train_loss"),
    (lambda run: (run / "metrics.csv").write_text(""), "found an empty file"),
    (lambda run: (run / "metrics.csv").write_text(METRICS_HEADER + "\n1,5,abc,,,,,1,1,1,1\n"),
     "line 2, column 'train_loss': expected a number, found 'abc'"),
    (lambda run: (run / "steps.csv").write_text("step,epoch,loss\n1,0,0.5\n2,0\n3,0,0.1\n"),
     "line 3 has no value in column 'loss'"),
    (lambda run: (run / "steps.csv").write_text("step,epoch,loss\n1,0,0.5,7\n"), "line 2 has 4 fields"),
    (lambda run: (run / "steps.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "not UTF-8"),
    (lambda run: (run / "steps.csv").write_text("step,epoch,loss\n"), "no rows yet"),
])
def test_missing_or_corrupt_files_are_one_line(tmp_path, capsys, damage, message):
    run = make_run(tmp_path, "run", "lif", 0)
    damage(run)
    out = tmp_path / "curves.png"
    out.write_bytes(b"an earlier plot")
    line = one_error(capsys, main(["plot", str(run), "--out", str(out)]))
    assert message in line and str(run) in line, line
    assert out.read_bytes() == b"an earlier plot"  # nothing good is replaced by a failed command


@pytest.mark.parametrize("args, message", [
    (["{a}", "{a}/../missing"], "needs --out"),
    (["{a}", "--out", "{a}/curves.jpg"], "expects a .png"),
    (["{a}/metrics.csv", "--out", "{a}/x.png"], "found a file"),
    (["{a}/../nowhere", "--out", "{a}/x.png"], "found nothing there"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    a = make_run(tmp_path, "a", "lif", 0)
    line = one_error(capsys, main(["plot", *(x.format(a=a) for x in args)]))
    assert message in line
    assert not list(a.glob("*.png")) and not list(a.glob("*.jpg"))


def test_without_matplotlib_one_line_names_the_extra(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path, "a", "lif", 0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = one_error(capsys, main(["plot", str(a)]))
    assert 'pip install "stcsnn[viz]"' in line
    assert not (a / "curves.png").exists()


# ------------------------------------------------------------------------------------------ figures a reader compares
@pytest.fixture
def saved_figures(monkeypatch, tmp_path):
    """The figures the analysis commands save, kept open: ``{file name: figure}`` (the PNGs are still written)."""
    from stcsnn.analysis import common

    figures, save = {}, common.save_figure

    def keep(fig, path):
        figures[Path(path).name] = fig  # closing it (pyplot's bookkeeping) leaves the figure readable
        return save(fig, path)

    monkeypatch.setattr(common, "save_figure", keep)
    return figures


def _renderer(fig):
    """An Agg renderer of ``fig``, drawn (closing a figure took its canvas away)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _overdrawn_texts(ax) -> list[str]:
    """The texts of an axes (free text and legend entries) whose box lies over the plotting area, where lines and
    bands are drawn."""
    renderer = _renderer(ax.figure)
    area = ax.get_window_extent(renderer)
    texts = list(ax.texts) + (list(ax.get_legend().get_texts()) if ax.get_legend() else [])
    return [t.get_text() for t in texts if t.get_text() and t.get_window_extent(renderer).overlaps(area)]


def test_per_horizon_panels_each_have_a_legend_clear_of_the_lines(saved_figures, tmp_path):
    from stcsnn.analysis.reproduce import plot_horizons

    rows = [{"dataset": "mm", "model": m, "metric": metric, "frame": f, "mean": v * f, "std": 0.1}
            for m, v in (("if", 1.0), ("stc_lif", 0.5), ("convlstm", 2.0)) for metric in ("mse", "ssim")
            for f in range(1, 7)]
    paths = plot_horizons(rows, tmp_path, {"mm": 3})
    assert sorted(p.name for p in paths) == ["pairs_mm.png", "per_horizon_mm.png"]
    for name in ("per_horizon_mm.png", "pairs_mm.png"):
        for ax in saved_figures[name].axes:
            legend = ax.get_legend()
            assert legend is not None, (name, ax.get_title())
            entries = [t.get_text() for t in legend.get_texts()]
            assert "trained horizon (3 frames)" in entries and "if" in entries, entries
            assert not _overdrawn_texts(ax), (name, ax.get_title(), _overdrawn_texts(ax))


def test_gradients_figure_has_integer_steps_and_nothing_between_title_and_axes(saved_figures, tmp_path):
    from stcsnn.analysis.gradients import GradientTrace, plot_gradients

    traces = [GradientTrace(n, "v", 1.0, [[10.0 ** -(s / 4 + k) for s in range(18)] for k in (3, 4)], [], [], [])
              for n in ("lif", "stc_lif")]
    hist = [{"neuron": n, "bin_lo": b / 50, "bin_hi": (b + 1) / 50, "density": 1.0 + b}
            for n in ("lif", "stc_lif") for b in range(100)]
    plot_gradients(traces, hist, tmp_path / "gradients.png", title="trained models")
    fig = saved_figures["gradients.png"]
    steps, factors = fig.axes
    ticks = [t for t in steps.get_xticks() if steps.get_xlim()[0] <= t <= steps.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    from matplotlib.text import Text

    renderer = _renderer(fig)

    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    for ax in (steps, factors):
        # nothing written between an axes' top edge and its title (the 1/2 and 1 labels were, touching it)
        top, title = ax.get_window_extent(renderer).y1, ax.title.get_window_extent(renderer).y0
        between = [t.get_text() for t in texts if t is not ax.title
                   and t.get_window_extent(renderer).y0 < title - 0.5 and t.get_window_extent(renderer).y1 > top + 0.5
                   and t.get_window_extent(renderer).x1 > ax.get_window_extent(renderer).x0
                   and t.get_window_extent(renderer).x0 < ax.get_window_extent(renderer).x1]
        assert not between, (ax.get_title(), between)
    assert "factor 1/2 (LIF's bound) and 1" in [t.get_text() for t in factors.get_legend().get_texts()]


def test_raster_marks_where_the_model_reads_its_own_predictions(saved_figures, tmp_path):
    import torch

    from stcsnn.analysis.dynamics import DynamicsTrace, plot_dynamics

    trace = DynamicsTrace("lif", rates=[[0.1, 0.2, 0.3, 0.2], [0.3, 0.2, 0.1, 0.0]], gains=[None, None],
                          spikes=[[torch.zeros(1, 1, 2, 2)] * 4] * 2)
    raster = [{"layer": l, **{f"s{t}": (t + i + l) % 2 for t in range(4)}} for l in (0, 1) for i in range(3)]
    plot_dynamics(trace, raster, tmp_path, input_frames=2)
    for ax in saved_figures["raster.png"].axes:
        red = [line for line in ax.get_lines() if line.get_color() == "tab:red"]
        assert len(red) == 1 and red[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]
        assert "own predictions" in red[0].get_label()
        assert not _overdrawn_texts(ax)
