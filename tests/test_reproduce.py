"""``stcsnn reproduce`` (issue 5, item 2) on a micro scale: the table's rows and columns, skipping finished
cells, resuming unfinished ones, and one-line errors for bad names."""

from __future__ import annotations

import csv
import importlib.util
import math

import pytest

import stcsnn.train.loop as loop
from stcsnn.analysis.reproduce import aggregate, plan_grid, run_grid
from stcsnn.analysis.scales import DEFAULT_MODELS, SCALES
from stcsnn.cli import main

MICRO = {
    "name": "micro",
    "datasets": ["embedded"],
    "config": {
        "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 2},
        "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "input_frames": 3, "output_frames": 2,
        "batch_size": 2, "eval_batch_size": 2, "epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0,
        "max_val_batches": 1, "max_test_batches": 1, "num_visualize": 1, "device": "cpu",
    },
}
MODELS = ["lif", "convlstm"]



def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class CountingTrainer(loop.Trainer):
    calls: list = []

    def __init__(self, cfg, out_dir, resume=None, progress=True):
        CountingTrainer.calls.append((cfg.neuron, str(out_dir), resume))
        super().__init__(cfg, out_dir, resume, progress)


def test_grid_table_skip_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "Trainer", CountingTrainer)
    CountingTrainer.calls = []
    logs: list[str] = []
    assert run_grid(MICRO, models=MODELS, out=tmp_path, progress=False, log=logs.append) == 0
    assert [c[0] for c in CountingTrainer.calls] == MODELS and all(c[2] == "auto" for c in CountingTrainer.calls)
    root = tmp_path / "micro"
    rows = read_csv(root / "results.csv")
    assert [(r["dataset"], r["model"], r["kind"], r["seeds"]) for r in rows] == \
        [("embedded", "lif", "SNN", "1"), ("embedded", "convlstm", "ANN", "1")]
    for key in ("mse", "mae", "ssim", "psnr", "params", "macs", "sops", "energy_snn_uj", "energy_ann_uj",
                "firing_rate", "train_seconds"):
        assert f"{key}_mean" in rows[0] and f"{key}_std" in rows[0]
    assert float(rows[0]["macs_mean"]) > 0 and float(rows[0]["train_seconds_mean"]) > 0
    assert rows[1]["firing_rate_mean"] == ""  # no firing rate for the ANN
    assert float(rows[1]["sops_mean"]) == 0
    md = (root / "results.md").read_text()
    assert "| model | kind | MSE | MAE | SSIM | PSNR | params | MACs (M)" in md
    assert "| lif | SNN |" in md and "| convlstm | ANN |" in md
    horizon = read_csv(root / "per_horizon.csv")
    assert {(r["model"], r["metric"]) for r in horizon} >= {("lif", "mse"), ("convlstm", "ssim")}
    assert {r["frame"] for r in horizon} == {"1", "2"}
    assert len(read_csv(root / "runs.csv")) == 2
    if importlib.util.find_spec("matplotlib"):
        assert (root / "per_horizon_embedded.png").is_file()

    # re-running skips every finished cell (no training), and rebuilds the same table
    report = root / "embedded" / "lif" / "seed0" / "report.json"
    stamp = report.stat().st_mtime_ns
    CountingTrainer.calls = []
    logs.clear()
    assert run_grid(MICRO, models=MODELS, out=tmp_path, progress=False, log=logs.append) == 0
    assert CountingTrainer.calls == []
    assert sum("skipped" in line for line in logs) == 2
    assert report.stat().st_mtime_ns == stamp
    assert read_csv(root / "results.csv") == rows

    # an unfinished cell (no report.json) is resumed from its last.pt; the finished one is skipped
    (root / "embedded" / "convlstm" / "seed0" / "report.json").unlink()
    assert run_grid(MICRO, models=MODELS, out=tmp_path, progress=False, log=logs.append) == 0
    assert [c[0] for c in CountingTrainer.calls] == ["convlstm"]
    assert any("resuming" in line for line in logs)
    assert (root / "embedded" / "convlstm" / "seed0" / "report.json").is_file()


def test_aggregate_mean_and_std_over_seeds():
    base = {"dataset": "d", "model": "m", "kind": "SNN", "mae": 1.0, "ssim": 0.5, "psnr": 10.0, "params": 7,
            "macs": 100.0, "sops": 10.0, "energy_snn_uj": 1.0, "energy_ann_uj": 2.0, "firing_rate": 0.1,
            "train_seconds": 3.0}
    rows = [{**base, "seed": 0, "mse": 1.0}, {**base, "seed": 1, "mse": 3.0}]
    (row,) = aggregate(rows)
    assert row["seeds"] == 2 and row["mse_mean"] == 2.0 and row["mse_std"] == pytest.approx(math.sqrt(2.0))
    (one,) = aggregate(rows[:1])
    assert math.isnan(one["mse_std"])


def test_scales_are_plain_data_and_grid_defaults(tmp_path):
    assert set(SCALES) == {"tiny", "small", "paper"}
    assert DEFAULT_MODELS == ("lif", "plif", "glif", "tclif", "lmh", "stc_lif", "stc_plif", "stc_lmh", "convlstm")
    name, cells = plan_grid("tiny", seeds=2, out=tmp_path)
    assert name == "tiny" and len(cells) == 2 * len(DEFAULT_MODELS)
    assert cells[0].cfg.hidden_channels == SCALES["tiny"]["config"]["hidden_channels"]
    assert cells[1].run_dir == tmp_path / "tiny" / "embedded" / "lif" / "seed1" and cells[1].cfg.seed == 1
    # paper: configs/<dataset>/<model>.yaml; a model without its file takes lif.yaml with its neuron
    (tmp_path / "cfg" / "mmnist").mkdir(parents=True)
    (tmp_path / "cfg" / "mmnist" / "lif.yaml").write_text("dataset: mmnist\nneuron: lif\nhidden_channels: [256]\n")
    notes: list[str] = []
    _, cells = plan_grid("paper", models=["lif", "convlstm"], out=tmp_path, configs=tmp_path / "cfg",
                         log=notes.append)
    assert [c.cfg.neuron for c in cells] == ["lif", "convlstm"] and cells[1].cfg.hidden_channels == [256]
    assert len(notes) == 1 and "convlstm.yaml" in notes[0]


@pytest.mark.parametrize("argv, text", [
    (["--models", "lif,nosuch"], "nosuch"),
    (["--datasets", "nosuch"], "nosuch"),
    (["--seeds", "0"], "--seeds"),
    (["--set", "bogus_key=1"], "bogus_key"),
])
def test_bad_input_one_error_line(tmp_path, capsys, argv, text):
    assert main(["reproduce", "--scale", "tiny", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and text in err[0]
    assert not (tmp_path / "tiny").exists()
