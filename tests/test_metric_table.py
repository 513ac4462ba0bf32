"""Training reads one metric table: the config key ``metrics`` selects what validation computes and every report
shows (progress and epoch lines, metrics.csv, report.json, report.md, the test line); a metric registered with
``register_metric(..., reported=True)`` appears in all of them. best.pt stays chosen by MSE."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, one_error, tiny_cfg

from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.data import build_splits
from stcsnn.metrics import METRICS, Metric, evaluate, metric_line, register_metric, unregister_metric
from stcsnn.models import build_model
from stcsnn.models.loading import read_checkpoint
from stcsnn.train.evaluate import evaluate_model, report_markdown
from stcsnn.train.loop import SELECTION_METRIC, train

REPO = Path(__file__).resolve().parents[1]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _max_error(p: torch.Tensor, y: torch.Tensor, acc) -> torch.Tensor:
    """The largest absolute pixel error of each frame: (B, T)."""
    return (p - y).abs().flatten(2).amax(-1)


MAXERR = Metric("maxerr", "MaxErr", ".5f", True, False, _max_error, description="largest pixel error")


@pytest.fixture
def maxerr():
    register_metric(MAXERR, reported=True)
    try:
        yield MAXERR
    finally:
        unregister_metric("maxerr")


def test_metric_line_prints_each_metric_by_its_label_and_format():
    results = {"mse": 29.8, "mae": 90.1, "ssim": 0.91, "psnr": 21.5, "num_samples": 4}
    assert metric_line(results, ("mse", "mae", "ssim", "psnr")) == "MSE 29.8000  MAE 90.1000  SSIM 0.9100  PSNR 21.500"
    assert metric_line(results, ("psnr", "mse")) == "PSNR 21.500  MSE 29.8000"
    assert metric_line(results) == metric_line(results, ("mse", "mae", "ssim", "psnr"))  # the reported set
    assert metric_line(results, ("lpips", "mse")) == "MSE 29.8000"  # not computed: left out


def test_a_registered_metric_appears_in_every_report_of_a_run(maxerr, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny_cfg(epochs=1), out, progress=True) == 0
    captured = capsys.readouterr()
    epoch_line = [line for line in captured.err.splitlines() if line.startswith("epoch 1/1 train_loss")]
    assert len(epoch_line) == 1 and " val_maxerr " in epoch_line[0], captured.err
    row = read_csv(out / "metrics.csv")[0]
    assert [k for k in row if k.startswith("val_")] == ["val_mse", "val_mae", "val_ssim", "val_psnr", "val_maxerr"]
    report = json.loads((out / "report.json").read_text())
    assert list(report["metrics"]) == ["mse", "mae", "ssim", "psnr", "maxerr"]
    # the value is the metric's own: the max error is at most 1 (frames in [0, 1] against predictions) and > 0
    assert 0 < report["metrics"]["maxerr"] and len(report["per_horizon"]["maxerr"]) == 3
    assert f"val_maxerr {float(row['val_maxerr']):.5f}" in epoch_line[0]
    md = (out / "report.md").read_text()
    assert "| MSE | MAE | SSIM | PSNR | MaxErr |" in md
    assert f" | {report['metrics']['maxerr']:.5f} |" in md
    assert "| frame | MSE | MAE | SSIM | PSNR | MaxErr |" in md
    test_line = [line for line in captured.out.splitlines() if line.startswith("test (best.pt): ")]
    assert test_line == [f"test (best.pt): {metric_line(report['metrics'], list(report['metrics']))}"]
    assert test_line[0].endswith(f"MaxErr {report['metrics']['maxerr']:.5f}")


def test_the_metrics_key_selects_what_is_computed_and_best_pt_stays_chosen_by_mse(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny_cfg(epochs=2, metrics=["psnr", "mae"]), out, progress=False) == 0
    rows = read_csv(out / "metrics.csv")
    assert [k for k in rows[0] if k.startswith("val_")] == ["val_psnr", "val_mae"]
    report = json.loads((out / "report.json").read_text())
    assert list(report["metrics"]) == ["psnr", "mae"] and list(report["per_horizon"]) == ["psnr", "mae"]
    md = (out / "report.md").read_text()
    assert "| PSNR | MAE |" in md and "SSIM |" not in md
    assert capsys.readouterr().out.startswith("test (best.pt): PSNR ")
    # best.pt holds the weights of the lowest validation MSE, although no report lists MSE: recompute it
    assert SELECTION_METRIC == "mse"
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")
    assert best["best_val_mse"] == last["best_val_mse"] and best["best_val_mse"] < float("inf")
    cfg = make_config(best["config"])
    model = build_model(cfg)
    model.load_state_dict(best["model"])
    results, _ = evaluate_model(model, build_splits(cfg)["val"], cfg, torch.device("cpu"), metrics=("mse",))
    assert results["mse"] == pytest.approx(best["best_val_mse"], rel=1e-9)


@pytest.mark.parametrize("value,found", [("[nope]", "'nope'"), ("[mse,mse]", "twice"), ("[]", "at least one")])
def test_a_metrics_key_naming_no_metric_of_the_table_is_one_error(tmp_path, capsys, value, found):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--set", f"metrics={value}"])
    line = one_error(capsys, rc)
    assert "config key 'metrics'" in line and found in line
    assert not (tmp_path / "run").exists()


def test_config_validates_metric_names_without_importing_torch_at_import_time():
    """config.py imports the table only inside validation: importing config does not import torch."""
    code = "import sys, stcsnn.config; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_report_markdown_prints_a_metric_no_longer_registered_plainly():
    payload = {"metrics": {"mse": 1.5, "gone": 0.25}, "per_horizon": {"mse": [1.0, 2.0], "gone": [0.2, 0.3]}}
    md = report_markdown(payload)
    assert "| MSE | GONE |" in md and "| 1.5000 | 0.2500 |" in md and "| 2 | 2.0000 | 0.3000 |" in md


def test_the_table_formats_are_what_reports_print(maxerr):
    pred = torch.full((1, 2, 1, 8, 8), 0.5)
    true = torch.zeros((1, 2, 1, 8, 8))
    res = evaluate(pred, true, metrics=["maxerr", "mae"])
    assert res == {"maxerr": pytest.approx(0.5), "mae": pytest.approx(32.0)}  # 64 pixels x 0.5
    assert METRICS["maxerr"].format(res["maxerr"]) == "0.50000"
