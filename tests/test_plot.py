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
