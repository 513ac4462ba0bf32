"""``stcsnn reproduce`` on a micro scale: the grid resumes after a kill without retraining finished cells, the
table's statistics against hand-computed numbers, the long-term evaluation against a manual rollout, the
``small`` scale's defaults and data fallback, ``--jobs``, and one-line errors for bad input."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_error

import stcsnn.train.loop as loop
from stcsnn.analysis.reproduce import (
    aggregate,
    horizon_ranges,
    paired_differences,
    parse_seeds,
    plan_grid,
    run_grid,
)
from stcsnn.analysis.scales import DEFAULT_MODELS, SCALES, SMALL_MODELS
from stcsnn.cli import main
from stcsnn.data import build_dataset
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.models.loading import load_model
from stcsnn.neurons.registry import stc_pairs

MICRO = {
    "name": "micro",
    "datasets": ["mfmnist"],
    "fallback": {"mfmnist": "embedded"},  # the tests give an empty data root: the fallback is taken and stated
    "seeds": 1,
    "horizon": 6,
    "config": {
        "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 4},
        "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "input_frames": 3, "output_frames": 2,
        "batch_size": 2, "eval_batch_size": 2, "epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0,
        "max_val_batches": 1, "max_test_batches": 2, "num_visualize": 1, "device": "cpu",
    },
}
MODELS = ["if", "stc_lif"]  # stc_lif and its declared base (the registry pairs them)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, int]:
    """mtime (ns) of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in ("table.md", "table.csv", "paired.csv", "runs.csv",
                                                          "per_horizon.csv", "results.json")}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A micro grid (if, stc_lif; one seed) run the way an interrupted grid is: a cell limit, then killed while
    training the second cell, then the same command twice. Returns what each run did."""
    out = tmp_path_factory.mktemp("grid")
    root = out / "micro"
    first = root / "embedded" / "if" / "seed0"
    overrides = {"data_root": str(out / "no-data")}
    calls: list[str] = []
    logs: list[str] = []
    seen: dict = {}
    real_train = loop.train

    def counting(cfg, out_dir, resume=None, progress=True):
        calls.append(f"{cfg.neuron}:{resume}")
        return real_train(cfg, out_dir, resume, progress)

    def killed(cfg, out_dir, resume=None, progress=True):
        calls.append(f"{cfg.neuron}:killed")
        raise KeyboardInterrupt

    def grid(train, **kw):
        calls.clear()
        logs.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(loop, "train", train)
            return run_grid(MICRO, models=MODELS, out=out, overrides=overrides, progress=False, log=logs.append,
                            **kw)

    torch.set_num_threads(1)
    seen["limited"] = (grid(counting, max_cells=1, plots=False), list(calls), (root / "table.md").read_text())
    seen["stamps"] = snapshot(first)
    with pytest.raises(KeyboardInterrupt):
        grid(killed, plots=False)
    seen["killed"] = (list(calls), (root / ".stcsnn.lock").exists())
    seen["rerun"] = (grid(counting), list(calls), list(logs), snapshot(first), outputs(root))
    seen["again"] = (grid(counting, plots=False), list(calls), snapshot(first), outputs(root))
    return root, overrides, seen


def test_grid_resumes_after_a_kill_without_retraining(resumed):
    root, _, seen = resumed
    rc, calls, table = seen["limited"]  # a cell limit: the first cell only; the table says the other is missing
    assert rc == 0 and calls == ["if:auto"] and "cells: 1 of 2 finished" in table
    assert {"report.json", "best.pt", "horizon6.json", "energy.json", "timing.json"} <= set(seen["stamps"])
    calls, locked = seen["killed"]  # killed while training the second cell; the grid's lock went with it
    assert calls == ["stc_lif:killed"] and not locked
    rc, calls, logs, stamps, after = seen["rerun"]  # the same command: the finished cell is left alone
    assert rc == 0 and calls == ["stc_lif:auto"]
    assert sum("finished, skipped" in line for line in logs) == 1
    assert stamps == seen["stamps"]
    assert "cells: 2 of 2 finished" in after["table.md"].decode()
    rc, calls, stamps, again = seen["again"]  # once more: nothing trains, the table is byte for byte the same
    assert rc == 0 and calls == [] and stamps == seen["stamps"] and again == after


def test_unfinished_cell_resumes_from_last_pt(tmp_path):
    calls: list[str] = []
    logs: list[str] = []
    overrides = {"data_root": str(tmp_path / "no-data")}
    assert run_grid(MICRO, models=["lif"], out=tmp_path, overrides=overrides, progress=False, log=logs.append,
                    plots=False) == 0
    run = tmp_path / "micro" / "embedded" / "lif" / "seed0"
    before = json.loads((run / "report.json").read_text())
    for name in ("report.json", "report.md", "predictions.png"):  # stopped after its last checkpoint, before the
        (run / name).unlink(missing_ok=True)  # test report (report.json is its first file: none of them exists)
    real_train = loop.train

    def counting(cfg, out_dir, resume=None, progress=True):
        calls.append(resume)
        return real_train(cfg, out_dir, resume, progress)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train", counting)
        assert run_grid(MICRO, models=["lif"], out=tmp_path, overrides=overrides, progress=False,
                        log=logs.append, plots=False) == 0
    assert calls == ["auto"] and any("resuming" in line for line in logs)
    assert json.loads((run / "report.json").read_text())["metrics"] == before["metrics"]


def test_table_files_and_caption(resumed):
    root, _, _ = resumed
    rows = read_csv(root / "table.csv")
    assert [(r["dataset"], r["model"], r["kind"], r["seeds"]) for r in rows] == \
        [("embedded", "if", "SNN", "1"), ("embedded", "stc_lif", "SNN", "1"),
         ("embedded", "mean_image", "reference", "1"), ("embedded", "last_frame", "reference", "1")]
    for key in ("mse", "mae", "ssim", "psnr", "mse_3_4", "mse_5_6", "params", "macs", "sops", "firing_rate",
                "train_seconds"):
        assert f"{key}_mean" in rows[0] and f"{key}_std" in rows[0], key
    assert rows[0]["mse_std"] == ""  # one seed: no spread is claimed
    md = (root / "table.md").read_text()
    assert "| model | kind | seeds | MSE | MAE | SSIM | PSNR | MSE 3-4 | MSE 5-6 | params | MACs (M)" in md
    assert "in place of mfmnist" in md and "Fashion-MNIST subset shipped with stcsnn" in md  # the fallback, said
    assert "| stc_lif − if | 0 |" in md and "| stc_lif − if | STC better |" in md
    assert "threads per cell: 1" in md
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    if cpu:  # the CPU the numbers come from (oneDNN picks kernels by it), read here independently
        assert f", {cpu}, " in next(line for line in md.splitlines() if line.startswith("machine: "))
    paired = read_csv(root / "paired.csv")
    assert [r["seed"] for r in paired][:3] == ["0", "mean", "std"]
    assert [r["seed"] for r in paired][3:] == ["ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high", "p", "p_holm",
                                               "difference"]
    assert paired[-1]["mse"] == "not shown"  # one seed: no interval, no claim
    runs = {r["model"]: r for r in read_csv(root / "runs.csv")}
    assert float(paired[0]["mse"]) == pytest.approx(float(runs["stc_lif"]["mse"]) - float(runs["if"]["mse"]))
    horizon = read_csv(root / "per_horizon.csv")
    assert {r["frame"] for r in horizon} == {str(t) for t in range(1, 7)} and {r["source"] for r in horizon} == {"long"}
    payload = json.loads((root / "results.json").read_text())
    assert payload["cells"] == {"total": 2, "finished": 2} and len(payload["paired"]) == 1
    if importlib.util.find_spec("matplotlib"):
        for name in ("per_horizon_embedded.png", "pairs_embedded.png"):
            assert (root / name).read_bytes()[:4] == b"\x89PNG"


def test_paired_differences_and_mean_std_by_hand():
    base = {"dataset": "d", "kind": "SNN", "mae": 1.0, "ssim": 0.5, "psnr": 10.0, "params": 7, "macs": 100.0,
            "sops": 10.0, "energy_snn_uj": 1.0, "energy_ann_uj": 2.0, "firing_rate": 0.1, "train_seconds": 3.0,
            "cell_wall_seconds": 4.0}
    lif = [1.0, 3.0, 5.0]
    stc = [2.0, 5.0, 9.0]  # differences 1, 2, 4
    rows = [{**base, "model": "if", "seed": s, "mse": v, "mse_11_20": 2 * v} for s, v in enumerate(lif)]
    rows += [{**base, "model": "stc_lif", "seed": s, "mse": v, "mse_11_20": 2 * lif[s] - 1, "ssim": 0.4 + 0.1 * s}
             for s, v in enumerate(stc)]
    rows.append({**base, "model": "stc_plif", "seed": 0, "mse": 1.0})  # no plif: no pair
    rows.append({**base, "model": "lif", "seed": 0, "mse": 1.0})  # stc_lif's base is if (the registry's), not lif
    table = {r["model"]: r for r in aggregate(rows)}
    assert table["if"]["mse_mean"] == 3.0 and table["if"]["mse_std"] == pytest.approx(2.0)  # sqrt(8 / 2)
    assert table["stc_lif"]["mse_std"] == pytest.approx(math.sqrt(((2 - 16 / 3) ** 2 + (5 - 16 / 3) ** 2
                                                                   + (9 - 16 / 3) ** 2) / 2))
    assert math.isnan(table["stc_plif"]["mse_std"]) and table["stc_plif"]["seeds"] == 1
    (pair,) = paired_differences(rows)
    assert (pair["stc"], pair["base"], pair["seeds"]) == ("stc_lif", "if", [0, 1, 2])
    assert [p["mse"] for p in pair["per_seed"]] == [1.0, 2.0, 4.0]
    assert pair["mse_mean"] == pytest.approx(7 / 3)
    assert pair["mse_std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert pair["mse_stc_better"] == 0  # a higher MSE in every seed
    assert [p["mse_11_20"] for p in pair["per_seed"]] == [-1.0, -1.0, -1.0] and pair["mse_11_20_stc_better"] == 3
    assert [round(p["ssim"], 10) for p in pair["per_seed"]] == [-0.1, 0.0, 0.1]
    assert pair["ssim_stc_better"] == 1  # higher SSIM is better; a tie is not
    # statistics by hand: d = 1, 2, 4; sd = sqrt(7/3), t = mean / (sd / sqrt 3) = sqrt(7); for 2 degrees of
    # freedom P(|T| > t) = 1 - t / sqrt(2 + t^2) = 1 - sqrt(7) / 3, and t_{0.975, 2} = 4.302652729911275
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)
    assert (pair["mse_ci_t_low"], pair["mse_ci_t_high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half), rel=1e-9)
    assert pair["mse_p"] == pytest.approx(1 - math.sqrt(7) / 3, rel=1e-9)
    assert pair["mse_ci_boot_low"] >= 1.0 and pair["mse_ci_boot_high"] <= 4.0 and pair["mse_bootstrap"] == "seeds"
    assert not pair["mse_shown"]  # the t interval includes 0: not shown, whatever the mean
    # Holm over the family mse, mae, ssim, psnr (p 1 - sqrt(7)/3, 1, 1, 1): the smallest times 4
    assert pair["mse_p_holm"] == pytest.approx(4 * (1 - math.sqrt(7) / 3), rel=1e-9) and pair["mae_p_holm"] == 1.0
    # the same difference -1 in every seed: a zero-width interval excluding 0, shown (not in Holm's family)
    assert (pair["mse_11_20_ci_t_low"], pair["mse_11_20_ci_t_high"]) == (-1.0, -1.0) and pair["mse_11_20_shown"]
    assert math.isnan(pair["mse_11_20_p_holm"])
    assert horizon_ranges(10, 30) == [(11, 20), (21, 30)] and horizon_ranges(10, 25) == [(11, 20), (21, 25)]


def test_long_horizon_equals_manual_rollout(resumed):
    root, _, _ = resumed
    run = root / "embedded" / "stc_lif" / "seed0"
    long = json.loads((run / "horizon6.json").read_text())
    report = json.loads((run / "report.json").read_text())
    model, cfg = load_model(run / "best.pt")
    assert long["checkpoint"] == "best.pt" and long["available"] and cfg.output_frames == 2
    test = build_dataset("embedded", "test", **{**cfg.data_options, "input_frames": 3, "output_frames": 6})
    n = cfg.max_test_batches * cfg.eval_batch_size
    inputs = torch.stack([test[i][0] for i in range(n)])
    truth = torch.stack([test[i][1] for i in range(n)])
    assert truth.shape[1] == 6  # the data generate the longer truth
    with torch.no_grad():
        pred = model.eval().rollout(inputs, 3, 6).frames[:, -6:]
    mse = ((pred - truth) ** 2).sum(dim=(2, 3, 4)).mean(0)  # per-frame sums over pixels, mean over sequences
    assert long["num_samples"] == n
    assert long["per_horizon"]["mse"] == pytest.approx(mse.tolist(), rel=1e-5)
    assert long["ranges"] == pytest.approx({"3-4": mse[2:4].mean().item(), "5-6": mse[4:6].mean().item()}, rel=1e-5)
    # the first two frames are those of the test report: same checkpoint, sequences and rollout
    assert long["per_horizon"]["mse"][:2] == pytest.approx(report["per_horizon"]["mse"], rel=1e-5)


@pytest.mark.slow
def test_jobs_run_cells_in_processes_with_the_same_results(tmp_path, resumed):
    root, overrides, _ = resumed
    logs: list[str] = []
    assert run_grid(MICRO, models=MODELS, out=tmp_path, overrides=overrides, progress=False, log=logs.append,
                    jobs=2, threads=2) == 0
    assert "2 cells at a time, 1 thread(s) each" in logs
    keys = ("model", "seed", "mse", "mae", "ssim", "psnr", "mse_3_4", "mse_5_6")
    strip = [[r[k] for k in keys] for r in read_csv(root / "runs.csv")]
    assert [[r[k] for k in keys] for r in read_csv(tmp_path / "micro" / "runs.csv")] == strip
    timing = json.loads((tmp_path / "micro" / "embedded" / "if" / "seed0" / "timing.json").read_text())
    assert timing["sessions"][0]["threads"] == 1 and timing["sessions"][0]["jobs"] == 2
    assert (tmp_path / "micro" / "logs" / "embedded_if_seed0.log").read_text().startswith("test (best.pt)")


def test_scales_are_plain_data_and_grid_defaults(tmp_path):
    assert set(SCALES) == {"tiny", "small", "paper", "recall"}
    # every STC neuron's declared base is in the default grid (stc_lif wraps IF); lif is the paper's comparison
    assert DEFAULT_MODELS == ("if", "lif", "plif", "glif", "tclif", "lmh", "stc_lif", "stc_plif", "stc_lmh",
                              "convlstm")
    assert stc_pairs(DEFAULT_MODELS) == [("stc_lif", "if"), ("stc_plif", "plif"), ("stc_lmh", "lmh")]
    grid = plan_grid("tiny", seeds=2, out=tmp_path)
    assert grid.name == "tiny" and len(grid.cells) == 2 * len(DEFAULT_MODELS)
    assert grid.cells[0].cfg.hidden_channels == SCALES["tiny"]["config"]["hidden_channels"]
    # seed-major: every model of seed 0, then of seed 1
    assert grid.cells[1].run_dir == tmp_path / "tiny" / "embedded" / "lif" / "seed0" and grid.cells[1].cfg.seed == 0
    n = len(DEFAULT_MODELS)
    assert grid.cells[n].run_dir == tmp_path / "tiny" / "embedded" / "if" / "seed1" and grid.cells[n].cfg.seed == 1
    # small: the pairs, the ablations, five seeds (ConvLSTM one) on one Moving Fashion-MNIST garment, 2 x 64
    # channels, 5 -> 5 frames, about 1200 steps of batch 8
    small = SCALES["small"]["config"]
    assert small["hidden_channels"] == [64, 64] and small["kernel_size"] == 5 and small["patch_size"] == 4
    assert small["batch_size"] == 8 and 1000 <= small["epochs"] * small["steps_per_epoch"] <= 1500
    assert small["data_options"] == {"num_digits": 1, "canvas_size": 40}
    data = tmp_path / "data" / "moving_fmnist"
    data.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (data / name).write_bytes(b"")
    grid = plan_grid("small", out=tmp_path, overrides={"data_root": str(tmp_path / "data")})
    assert list(dict.fromkeys(c.model for c in grid.cells)) == list(SMALL_MODELS)
    assert len(grid.cells) == 5 * (len(SMALL_MODELS) - 1) + 1
    assert [c.seed for c in grid.cells if c.model == "convlstm"] == [0]
    assert stc_pairs(SMALL_MODELS) == [("stc_lif", "if"), ("stc_lif_temporal", "if"), ("stc_lif_spatial", "if"),
                                       ("stc_plif", "plif"), ("stc_lmh", "lmh"), ("stc_lif_capped", "if"),
                                       ("stc_lif_detached", "if")]
    assert "lif" in SMALL_MODELS and {c.cfg.val_every for c in grid.cells} == {1}
    assert {c.dataset for c in grid.cells} == {"mfmnist"} and {c.horizon for c in grid.cells} == {0}
    assert str(data / "train-images-idx3-ubyte.gz") in grid.data_notes["mfmnist"]
    notes: list[str] = []
    grid = plan_grid("small", out=tmp_path, overrides={"data_root": str(tmp_path / "empty")}, log=notes.append,
                     models=["lif"], seeds=parse_seeds("0,2"))
    assert [(c.dataset, c.seed) for c in grid.cells] == [("embedded", 0), ("embedded", 2)]
    assert "in place of mfmnist" in grid.data_notes["embedded"] and any("in place of mfmnist" in n for n in notes)
    # named explicitly, a dataset is used as named (its missing files are then an error at training time)
    grid = plan_grid("small", datasets=["mfmnist"], models=["lif"], seeds=1, out=tmp_path,
                     overrides={"data_root": str(tmp_path / "empty")}, horizon=0)
    assert [(c.dataset, c.horizon) for c in grid.cells] == [("mfmnist", 0)]
    assert parse_seeds("3") == 3 and parse_seeds("1-3") == [1, 2, 3] and parse_seeds("4,") == [4]
    # paper: configs/<dataset>/reference.yaml with each model's neuron (its options dropped for another neuron)
    (tmp_path / "cfg" / "mmnist").mkdir(parents=True)
    (tmp_path / "cfg" / "mmnist" / "reference.yaml").write_text(
        "dataset: mmnist\nneuron: stc_lif\nneuron_options: {alpha: 2.0}\nhidden_channels: [256]\n")
    notes = []
    grid = plan_grid("paper", models=["stc_lif", "lif", "convlstm"], out=tmp_path, configs=tmp_path / "cfg",
                     log=notes.append)
    assert [c.cfg.neuron for c in grid.cells] == ["stc_lif", "lif", "convlstm"]
    assert [c.cfg.hidden_channels for c in grid.cells] == [[256]] * 3 and not notes
    assert grid.cells[0].cfg.neuron_options == {"alpha": 2.0} and grid.cells[1].cfg.neuron_options == {}
    with pytest.raises(ConfigError, match="no reference config"):
        plan_grid("paper", models=["lif"], datasets=["kth"], out=tmp_path, configs=tmp_path / "cfg")


@pytest.mark.parametrize("argv, text", [
    (["--models", "lif,nosuch"], "nosuch"),
    (["--datasets", "nosuch"], "nosuch"),
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "a,b"], "--seeds"),
    (["--jobs", "0"], "--jobs"),
    (["--horizon", "5"], "--horizon"),
    (["--set", "bogus_key=1"], "bogus_key"),
])
def test_bad_input_one_error_line(tmp_path, capsys, argv, text):
    assert main(["reproduce", "--scale", "tiny", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and text in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "tiny").exists()


def files(folder: Path) -> dict[str, bytes]:
    """The bytes of every file under ``folder`` but the grid's lock."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".stcsnn.lock"}


@pytest.mark.parametrize("name, content, found", [
    ("energy.json", b'{"total": {"params": 1', "no valid JSON"),  # truncated
    ("horizon6.json", b"[]", "found an array"),
    ("report.json", b"\x00garbage\xff", "no valid JSON"),
    ("report.json", b'{"metrics": {"mse": 1}}', "found no metrics.mae"),
    ("timing.json", b'{"sessions": 3', "no valid JSON"),
])
def test_corrupt_cell_file_is_one_error_naming_it(tmp_path, resumed, name, content, found):
    """A finished cell's corrupt result file: one error line naming the file, what it should hold and how to redo
    it; nothing written. Doing what it says (delete it, run again) makes the file again."""
    root, overrides, _ = resumed
    shutil.copytree(root, tmp_path / "micro")
    bad = tmp_path / "micro" / "embedded" / "if" / "seed0" / name
    original = bad.read_bytes()
    bad.write_bytes(content)
    before = files(tmp_path / "micro")
    with pytest.raises(StcsnnError) as info:
        run_grid(MICRO, models=MODELS, out=tmp_path, overrides=overrides, progress=False, log=lambda s: None)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{bad}: expected ") and found in message
    assert message.endswith("delete it and run the same `stcsnn reproduce` command again")
    assert files(tmp_path / "micro") == before
    if name in ("energy.json", "horizon6.json"):  # the cached evaluations are recomputed, the same as before
        bad.unlink()
        assert run_grid(MICRO, models=MODELS, out=tmp_path, overrides=overrides, progress=False,
                        log=lambda s: None, plots=False) == 0
        again, then = json.loads(bad.read_text()), json.loads(original)
        if name == "energy.json":
            assert again["total"] == then["total"]  # operation counts of the same weights and batch
        else:
            assert again["ranges"] == pytest.approx(then["ranges"], rel=1e-5)


@pytest.mark.parametrize("seeds", ["99999999999", "0-99999999999", "5,0-999", "4294967296"])
def test_too_many_seeds_one_error_line(tmp_path, capsys, seeds):
    """Refused before any list of seeds is built (99999999999 was a MemoryError)."""
    rc = main(["reproduce", "--scale", "tiny", "--out", str(tmp_path), "--seeds", seeds])
    line = one_error(capsys, rc)
    assert "--seeds must give at most 1000 seeds, each 0..4294967295" in line
    assert seeds in line or "1001 seeds up to 999" in line
    assert list(tmp_path.iterdir()) == []


def test_cell_log_symlink_is_refused_and_its_target_untouched(tmp_path, capsys):
    """``--jobs``: a symbolic link where a cell's output log goes (to a file of the user's) is one error line; the
    link's target keeps its bytes and no cell starts."""
    target = tmp_path / "mine.txt"
    target.write_bytes(b"the user's own notes\n")
    logs = tmp_path / "out" / "tiny" / "logs"
    logs.mkdir(parents=True)
    (logs / "embedded_lif_seed0.log").symlink_to(target)
    rc = main(["reproduce", "--scale", "tiny", "--models", "lif", "--seeds", "1", "--jobs", "2", "--quiet",
               "--out", str(tmp_path / "out")])
    line = one_error(capsys, rc)
    assert str(logs / "embedded_lif_seed0.log") in line and "symbolic link" in line
    assert target.read_bytes() == b"the user's own notes\n"
    assert not (tmp_path / "out" / "tiny" / "embedded").exists()  # no cell started


def test_cell_logs_folder_symlink_is_refused(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out" / "tiny").mkdir(parents=True)
    (tmp_path / "out" / "tiny" / "logs").symlink_to(elsewhere)
    rc = main(["reproduce", "--scale", "tiny", "--models", "lif", "--seeds", "1", "--jobs", "2", "--quiet",
               "--out", str(tmp_path / "out")])
    line = one_error(capsys, rc)
    assert str(tmp_path / "out" / "tiny" / "logs") in line and "symbolic link" in line
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------------------------------------- statistics


def _max_error(p, y, acc):
    """A metric the tests register: the largest absolute pixel error of each frame."""
    return (p - y).abs().flatten(2).amax(2)


@pytest.fixture(scope="module")
def stats_grid(tmp_path_factory):
    """The micro grid with two seeds and three epochs (validated every epoch), run with a metric registered as
    reported (unregistered afterwards). Returns the grid folder and the lines the grid logged."""
    from stcsnn.metrics import Metric, register_metric, unregister_metric

    out = tmp_path_factory.mktemp("stats")
    logs: list[str] = []
    torch.set_num_threads(1)
    register_metric(Metric("maxerr", "MaxErr", ".3f", True, False, per_frame=_max_error), reported=True)
    try:
        assert run_grid(MICRO, models=MODELS, seeds=2, out=out, progress=False, log=logs.append, plots=False,
                        overrides={"data_root": str(out / "no-data"), "epochs": 3, "steps_per_epoch": 1}) == 0
    finally:
        unregister_metric("maxerr")
    return out / "micro", logs


def test_registered_metric_reaches_every_table(stats_grid):
    root, _ = stats_grid
    md = (root / "table.md").read_text()
    assert "| model | kind | seeds | MSE | MAE | SSIM | PSNR | MaxErr | MSE 3-4 |" in md and "| ΔMaxErr |" in md
    table = read_csv(root / "table.csv")
    assert [r["model"] for r in table] == ["if", "stc_lif", "mean_image", "last_frame"]
    assert all(float(r["maxerr_mean"]) > 0 for r in table)
    runs = read_csv(root / "runs.csv")
    for r in runs:  # the test report does not hold it: the grid's own per-sequence evaluation of the same frames
        report = json.loads((Path(r["run_dir"]) / "report.json").read_text())
        values = report["per_sequence"]["per_sequence"]["maxerr"]
        assert len(values) == 4 and float(r["maxerr"]) == pytest.approx(sum(values) / 4, rel=1e-9)
    paired = {r["seed"]: r for r in read_csv(root / "paired.csv")}
    by = {(r["model"], r["seed"]): float(r["maxerr"]) for r in runs}
    assert float(paired["0"]["maxerr"]) == pytest.approx(by[("stc_lif", "0")] - by[("if", "0")])
    assert paired["p"]["maxerr"] != "" and paired["p_holm"]["maxerr"] != ""


def test_paired_statistics_recomputed_from_runs_csv(stats_grid):
    """t interval, p, two-level bootstrap and Holm of every metric, recomputed here from runs.csv and the cells'
    per-sequence records with analysis.stats; "not shown" exactly where an interval includes 0."""
    from stcsnn.analysis.stats import holm, paired_summary

    root, _ = stats_grid
    runs = {(r["model"], int(r["seed"])): r for r in read_csv(root / "runs.csv")}
    paired = {r["seed"]: r for r in read_csv(root / "paired.csv")}
    assert [k for k in paired] == ["0", "1", "mean", "std", "ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high",
                                   "p", "p_holm", "difference"]
    metrics = ["mse", "mae", "ssim", "psnr", "maxerr"]
    pvalues = []
    md = (root / "table.md").read_text()
    for m in metrics:
        diffs = [float(runs[("stc_lif", s)][m]) - float(runs[("if", s)][m]) for s in (0, 1)]
        seqs = [[a - b for a, b in zip(*(json.loads((Path(runs[(model, s)]["run_dir"]) / "report.json").read_text())
                                         ["per_sequence"]["per_sequence"][m] for model in ("stc_lif", "if")))]
                for s in (0, 1)]
        ref = paired_summary(diffs, 0.95, per_sequence=np.array(seqs))
        assert float(paired["mean"][m]) == pytest.approx(ref["mean"], rel=1e-9)
        assert (float(paired["ci_t_low"][m]), float(paired["ci_t_high"][m])) == pytest.approx(ref["ci_t"], rel=1e-9)
        assert (float(paired["ci_boot_low"][m]), float(paired["ci_boot_high"][m])) == pytest.approx(ref["ci_boot"])
        assert float(paired["p"][m]) == pytest.approx(ref["p_t"], rel=1e-9)
        shown = all(lo > 0 or hi < 0 for lo, hi in (ref["ci_t"], ref["ci_boot"]))
        assert (paired["difference"][m] == "not shown") == (not shown), m
        if not shown:
            assert "not shown" in md
        pvalues.append(ref["p_t"])
    assert [float(paired["p_holm"][m]) for m in metrics] == pytest.approx(holm(pvalues), rel=1e-9)
    assert paired["p_holm"]["mse_3_4"] == ""  # the long-horizon ranges are outside the family
    payload = json.loads((root / "results.json").read_text())
    assert payload["primary_metric"] == "mse" and payload["paired"][0]["mse_bootstrap"] == "two-level"
    assert "MSE is the primary metric" in md


def test_selected_epoch_is_the_checkpoint_the_report_evaluated(stats_grid):
    from stcsnn.models.loading import read_checkpoint

    root, _ = stats_grid
    for r in read_csv(root / "runs.csv"):
        run = Path(r["run_dir"])
        epochs = read_csv(run / "metrics.csv")
        assert [e["epoch"] for e in epochs] == ["1", "2", "3"] and all(e["val_mse"] for e in epochs)  # every epoch
        assert r["checkpoint"] == "best.pt" and int(r["selected_epoch"]) == read_checkpoint(run / "best.pt")["epoch"]


def test_reference_rows_by_hand(stats_grid):
    """mean_image and last_frame recomputed here: the mean frame of the training split, the last observed frame,
    on the grid's test sequences, MSE as a per-frame sum over pixels."""
    root, _ = stats_grid
    _, cfg = load_model(root / "embedded" / "if" / "seed0" / "best.pt")
    opts = {**cfg.data_options, "input_frames": 3}
    train = build_dataset("embedded", "train", **{**opts, "output_frames": 2})
    frames = torch.cat([torch.cat(train[i]) for i in range(len(train))]).double()
    mean = frames.mean(0)
    test = build_dataset("embedded", "test", **{**opts, "output_frames": 6})
    n = cfg.max_test_batches * cfg.eval_batch_size
    inputs = torch.stack([test[i][0] for i in range(n)]).double()
    truth = torch.stack([test[i][1] for i in range(n)]).double()
    guesses = {"mean_image": mean.expand_as(truth), "last_frame": inputs[:, -1:].expand_as(truth)}
    table = {r["model"]: r for r in read_csv(root / "table.csv")}
    for name, pred in guesses.items():
        mse = ((pred - truth) ** 2).sum(dim=(2, 3, 4)).mean(0)  # per predicted frame
        row = table[name]
        assert row["kind"] == "reference" and row["seeds"] == "1" and row["mse_std"] == "" and row["params_mean"] == ""
        assert float(row["mse_mean"]) == pytest.approx(mse[:2].mean().item(), rel=1e-5)
        assert float(row["mse_5_6_mean"]) == pytest.approx(mse[4:6].mean().item(), rel=1e-5)
    assert "| mean_image | reference | 1 |" in (root / "table.md").read_text()


def test_the_table_is_printed_at_the_end(stats_grid):
    root, logs = stats_grid
    assert logs[-2].startswith("wrote ") and logs[-1] == (root / "table.md").read_text()
