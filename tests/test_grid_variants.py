"""``stcsnn reproduce`` variants (a dataset label per set of config overrides: the recall scale's delays),
per-model seed counts, the scales listed by the command line, per-cell provenance (machine, source commit), the
MSE relative to the mean-image reference and the recall-against-delay table, against hand-computed numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import one_error

from stcsnn.analysis.grid.aggregate import delay_series, mean_image_ratio, t_interval
from stcsnn.analysis.grid.plan import deep_merge
from stcsnn.analysis.reproduce import plan_grid, run_grid
from stcsnn.analysis.scales import RECALL_DELAYS, RECALL_MODELS, RECALL_SHOW, SCALES, SMALL_MODELS
from stcsnn.cli import main
from stcsnn.data import build_split
from stcsnn.device import cpu_model
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.machine import source_commit

#: Student's t quantiles, from scipy.stats.t.ppf (independent of stcsnn.analysis.stats): t(0.975; 1) and t(0.975; 2)
T975 = {1: 12.706204736174694, 2: 4.302652729749462}

#: a memory grid that trains in seconds: recall at delays 0 and 1, one layer of 16 channels, 2 steps
MEMORY = {
    "name": "memory",
    "datasets": ["recall"],
    "seeds": 2,
    "horizon": 0,
    "config": {
        "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 4},
        "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "output_frames": 2,
        "batch_size": 2, "eval_batch_size": 2, "epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0,
        "max_val_batches": 1, "max_test_batches": 2, "num_visualize": 1, "device": "cpu",
    },
    "variants": {"mem_d0": {"data_options": {"delay": 0}, "input_frames": 2},
                 "mem_d1": {"data_options": {"delay": 1}, "input_frames": 3}},
}


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ planning


def test_recall_scale_one_label_per_delay_over_the_small_config(tmp_path):
    from stcsnn.data.recall import RECALL_DEFAULTS

    assert RECALL_SHOW == RECALL_DEFAULTS["show"]  # scales.py repeats it to stay torch-free
    spec = SCALES["recall"]
    assert spec["models"] == RECALL_MODELS and set(RECALL_MODELS) == set(SMALL_MODELS) and spec["seeds"] == 5
    assert spec["horizon"] == 0 and spec["model_seeds"] == {"convlstm": 1}
    small = SCALES["small"]["config"]
    assert spec["config"] == {**small, "data_options": {}, "output_frames": 2, "epochs": 3,
                              "sampling_changing_rate": 5.0e-3, "sampling_stop_iter": 200}
    grid = plan_grid("recall", out=tmp_path, seeds=1)
    labels = [f"recall_d{d}" for d in RECALL_DELAYS]
    assert list(dict.fromkeys(c.dataset for c in grid.cells)) == labels
    assert [c.model for c in grid.cells if c.dataset == "recall_d5"] == list(spec["models"])
    for c in grid.cells:
        delay = int(c.dataset.removeprefix("recall_d"))
        assert c.cfg.dataset == "recall" and c.cfg.data_options == {"delay": delay}
        assert (c.cfg.input_frames, c.cfg.output_frames) == (RECALL_SHOW + delay, 2) and c.horizon == 0
        assert c.cfg.hidden_channels == small["hidden_channels"] and c.cfg.lr == small["lr"]
        assert c.run_dir == tmp_path / "recall" / c.dataset / c.model / "seed0"
    assert grid.variants == {f"recall_d{d}": {"data_options": {"delay": d}, "input_frames": RECALL_SHOW + d}
                             for d in RECALL_DELAYS}
    note = grid.data_notes["recall_d10"]
    assert note.startswith("recall: ") and "variant recall_d10: data_options.delay = 10, input_frames = 12" in note
    # the config is one the data accept: the sequence is show + delay frames in, 2 out
    cell = next(c for c in grid.cells if c.dataset == "recall_d5")
    inputs, targets = build_split(cell.cfg, "test")[0]
    assert inputs.shape[0] == RECALL_SHOW + 5 and targets.shape[0] == 2
    # --datasets selects variants by label
    grid = plan_grid("recall", datasets=["recall_d20", "recall_d0"], models=["lif"], seeds=2, out=tmp_path)
    assert [(c.dataset, c.seed, c.cfg.input_frames) for c in grid.cells] == \
        [("recall_d20", 0, 22), ("recall_d20", 1, 22), ("recall_d0", 0, 2), ("recall_d0", 1, 2)]


def test_the_data_registry_only_ever_sees_the_real_dataset(tmp_path, monkeypatch):
    import stcsnn.data.registry as registry

    asked: list[str] = []
    real = registry.get_dataset_spec

    def recording(name):
        asked.append(name)
        return real(name)

    monkeypatch.setattr(registry, "get_dataset_spec", recording)
    plan_grid("recall", out=tmp_path, seeds=1)
    assert asked and set(asked) == {"recall"}


def test_unknown_variant_is_one_error_line(tmp_path, capsys):
    rc = main(["reproduce", "--scale", "recall", "--datasets", "recall_d3", "--out", str(tmp_path)])
    line = one_error(capsys, rc)
    assert "recall_d3" in line and "recall_d0, recall_d5, recall_d10, recall_d20, recall_d40" in line
    assert not (tmp_path / "recall").exists()


def test_variant_overrides_are_deep_merged(tmp_path):
    base = {"data_options": {"canvas_size": 32, "delay": 5}, "input_frames": 7, "lr": 0.1}
    merged = deep_merge(base, {"data_options": {"delay": 1}, "input_frames": 3})
    assert merged == {"data_options": {"canvas_size": 32, "delay": 1}, "input_frames": 3, "lr": 0.1}
    assert base == {"data_options": {"canvas_size": 32, "delay": 5}, "input_frames": 7, "lr": 0.1}  # untouched
    grid = plan_grid(MEMORY, models=["lif"], seeds=1, out=tmp_path)
    assert [(c.dataset, c.cfg.data_options) for c in grid.cells] == [
        ("mem_d0", {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 4, "delay": 0}),
        ("mem_d1", {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 4, "delay": 1})]
    assert MEMORY["config"]["data_options"] == {"canvas_size": 32, "num_samples": 8, "val_samples": 2,
                                                "test_samples": 4}


def test_model_seeds_gives_a_model_the_first_n_seeds(tmp_path):
    scale = {**MEMORY, "variants": {"mem_d0": MEMORY["variants"]["mem_d0"]}, "model_seeds": {"convlstm": 1}}
    grid = plan_grid(scale, models=["lif", "convlstm"], seeds=3, out=tmp_path)
    # seed-major: every model of seed 0 first
    assert [(c.model, c.seed) for c in grid.cells] == [("lif", 0), ("convlstm", 0), ("lif", 1), ("lif", 2)]
    grid = plan_grid(scale, models=["convlstm", "lif"], seeds=[4, 2], out=tmp_path)
    assert [(c.model, c.seed) for c in grid.cells] == [("convlstm", 4), ("lif", 4), ("lif", 2)]
    with pytest.raises(ConfigError, match="model_seeds of 'convlstm' must be a count >= 1, got 0"):
        plan_grid({**scale, "model_seeds": {"convlstm": 0}}, models=["lif"], out=tmp_path)


def test_model_options_reach_that_models_cells_only(tmp_path):
    scale = {**MEMORY, "variants": {"mem_d0": MEMORY["variants"]["mem_d0"]},
             "model_options": {"lmh": {"detach_reset": False}}}
    grid = plan_grid(scale, models=["lif", "lmh"], seeds=1, out=tmp_path)
    assert [(c.model, c.cfg.neuron_options) for c in grid.cells] == [("lif", {}), ("lmh", {"detach_reset": False})]
    with pytest.raises(ConfigError, match="model_options of 'lmh' must be a mapping of neuron options, got 3"):
        plan_grid({**scale, "model_options": {"lmh": 3}}, models=["lmh"], out=tmp_path)
    with pytest.raises(ConfigError, match=r"model_options of .lif.: no option .detach_reset. \(it takes surrogate"):
        plan_grid({**scale, "model_options": {"lif": {"detach_reset": False}}}, models=["lif"], out=tmp_path)


def test_the_grids_train_lm_h_with_the_gradient_through_the_reset():
    """The small and recall protocol: every neuron's reset passes its gradient (scales.py says why)."""
    for name in ("small", "recall"):
        assert SCALES[name]["model_options"] == {"lmh": {"detach_reset": False}, "stc_lmh": {"detach_reset": False}}


def test_a_finished_cell_trained_with_another_config_is_refused(tmp_path):
    scale = {**MEMORY, "variants": {"mem_d0": MEMORY["variants"]["mem_d0"]}}
    assert run_grid(scale, models=["lmh"], seeds=1, out=tmp_path, progress=False, log=lambda m: None,
                    plots=False) == 0
    report = tmp_path / "memory" / "mem_d0" / "lmh" / "seed0" / "report.json"
    before = report.read_bytes()
    changed = {**scale, "model_options": {"lmh": {"detach_reset": False}}}
    with pytest.raises(StcsnnError, match=r"mem_d0/lmh seed 0: .* was trained with neuron_options=\{\}, the grid now "
                                          r"gives \{'detach_reset': False\}: move that folder away"):
        run_grid(changed, models=["lmh"], seeds=1, out=tmp_path, progress=False, log=lambda m: None, plots=False)
    assert report.read_bytes() == before
    # a resume-time key (epochs may grow on resume) is not a different protocol: the finished cell is kept
    assert run_grid({**scale, "config": {**scale["config"], "log_every": 7}}, models=["lmh"], seeds=1,
                    out=tmp_path, progress=False, log=lambda m: None, plots=False) == 0


def test_cli_lists_the_scales_and_their_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "--scale {" + ",".join(SCALES) + "}" in text and "recall" in SCALES
    for name, spec in SCALES.items():
        assert f"{name}: {' '.join(spec['help'].split())}" in text


# ---------------------------------------------------------------------------------------------- provenance


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_source_commit_of_a_real_checkout_clean_and_dirty(tmp_path):
    repo = tmp_path / "repo"
    package = repo / "src" / "stcsnn"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (repo / "README.md").write_text("readme\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert source_commit(package) == head
    (repo / "README.md").write_text("edited outside src\n")
    assert source_commit(package) == head  # only the source tree counts
    (package / "new.py").write_text("y = 2\n")  # untracked inside src
    assert source_commit(package) == head + "-dirty"
    (package / "new.py").unlink()
    (package / "__init__.py").write_text("x = 2\n")
    assert source_commit(package) == head + "-dirty"
    _git(repo, "commit", "-q", "-am", "second")
    second = _git(repo, "rev-parse", "HEAD")
    assert source_commit(package) == second != head
    (repo / "README.md").write_text("results\n")
    _git(repo, "commit", "-q", "-am", "results, outside src")  # what a running grid commits: not the code
    assert _git(repo, "rev-parse", "HEAD") != second and source_commit(package) == second
    # not a checkout's src/stcsnn: an installed copy (here: a folder of another repository, or no repository)
    other = repo / "venv" / "site-packages" / "stcsnn"
    other.mkdir(parents=True)
    assert source_commit(other) is None
    loose = tmp_path / "loose" / "stcsnn"
    loose.mkdir(parents=True)
    assert source_commit(loose) is None


# ------------------------------------------------------------------------------------------- pure numbers


def test_mean_image_ratio_by_hand():
    assert mean_image_ratio(3.0, 12.0) == 0.25 and mean_image_ratio(30.0, 12.0) == 2.5
    for mse, ref in ((3.0, None), (None, 12.0), (3.0, 0.0), (3.0, math.nan), (math.nan, 12.0)):
        assert math.isnan(mean_image_ratio(mse, ref))


def test_delay_series_from_rows_by_hand():
    rows = [{"dataset": "r_d5", "model": "lif", "seed": s, "mse": m, "ssim": q}
            for s, m, q in ((0, 10.0, 0.5), (1, 12.0, 0.6), (2, 17.0, 0.4))]
    rows += [{"dataset": "r_d0", "model": "lif", "seed": s, "mse": m, "ssim": q}
             for s, m, q in ((0, 1.0, 0.9), (1, 3.0, 0.7))]
    rows += [{"dataset": "r_d0", "model": "mean_image", "seed": None, "mse": 40.0, "ssim": 0.2},
             {"dataset": "other", "model": "lif", "seed": 0, "mse": 99.0, "ssim": 0.0}]  # not a delay variant
    out = delay_series(rows, {"r_d0": ("r", 0), "r_d5": ("r", 5)})
    assert [(r["dataset"], r["model"], r["delay"], r["n"]) for r in out] == \
        [("r", "lif", 0, 2), ("r", "lif", 5, 3), ("r", "mean_image", 0, 1)]
    # seeds 10, 12, 17: mean 13, sample sd sqrt(13), half width t(0.975; 2) sqrt(13) / sqrt(3)
    half = T975[2] * math.sqrt(13.0) / math.sqrt(3.0)
    assert (out[1]["mse_mean"], out[1]["mse_lo"], out[1]["mse_hi"]) == pytest.approx((13.0, 13 - half, 13 + half))
    # 1, 3: mean 2, sd sqrt(2); 0.9, 0.7: mean 0.8, sd sqrt(0.02)
    half = T975[1] * math.sqrt(2.0) / math.sqrt(2.0)
    assert (out[0]["mse_mean"], out[0]["mse_lo"], out[0]["mse_hi"]) == pytest.approx((2.0, 2 - half, 2 + half))
    half = T975[1] * math.sqrt(0.02) / math.sqrt(2.0)
    assert (out[0]["ssim_lo"], out[0]["ssim_hi"]) == pytest.approx((0.8 - half, 0.8 + half))
    assert out[2]["mse_mean"] == 40.0 and math.isnan(out[2]["mse_lo"]) and math.isnan(out[2]["mse_hi"])
    assert t_interval([5.0])[0] == 5.0 and math.isnan(t_interval([5.0])[1])


# -------------------------------------------------------------------------------------- a trained grid


@pytest.fixture(scope="module")
def memory_grid(tmp_path_factory):
    """The memory grid, 2 delays x 2 seeds x 1 model, trained."""
    out = tmp_path_factory.mktemp("memory")
    torch.set_num_threads(1)
    assert run_grid(MEMORY, models=["lif"], out=out, progress=False, log=lambda _: None) == 0
    return out / "memory"


def test_memory_grid_folders_references_and_provenance(memory_grid):
    root = memory_grid
    for label in ("mem_d0", "mem_d1"):
        for seed in (0, 1):
            assert (root / label / "lif" / f"seed{seed}" / "report.json").is_file()
        ref = json.loads((root / label / "references" / "mean_image_h0.json").read_text())
        assert ref["dataset"] == label  # cached per label: each delay has its own test sequences
    runs = read_csv(root / "runs.csv")
    assert [(r["dataset"], r["seed"]) for r in runs] == [("mem_d0", "0"), ("mem_d0", "1"), ("mem_d1", "0"),
                                                         ("mem_d1", "1")]
    import platform

    machine = cpu_model() or platform.processor()
    commit = source_commit()
    for r in runs:
        timing = json.loads((Path(r["run_dir"]) / "timing.json").read_text())["sessions"]
        assert [(s["machine"], s["commit"]) for s in timing] == [(machine or None, commit)]
        assert r["machine"] == (machine or "") and r["commit"] == (commit or "")
    md = (root / "table.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("cells ran on: "))
    assert line == f"cells ran on: {machine or 'unknown'}; commits: " \
                   f"{commit or 'unknown (not run from a git checkout)'}"
    assert "## mem_d0" in md and "## mem_d1" in md and "variant mem_d1: data_options.delay = 1" in md
    assert json.loads((root / "results.json").read_text())["variants"] == MEMORY["variants"]


def test_memory_grid_mse_relative_to_the_mean_image(memory_grid):
    root = memory_grid
    table = read_csv(root / "table.csv")
    mean = {r["dataset"]: float(r["mse_mean"]) for r in table if r["model"] == "mean_image"}
    for r in read_csv(root / "runs.csv"):
        assert float(r["mse_vs_mean_image"]) == pytest.approx(float(r["mse"]) / mean[r["dataset"]], rel=1e-12)
    md = (root / "table.md").read_text()
    assert "| train time (s) | MSE / mean image |" in md
    for r in table:
        ratio = float(r["mse_mean"]) / mean[r["dataset"]]
        assert float(r["mse_vs_mean_image"]) == pytest.approx(ratio, rel=1e-12)
        section = md.split(f"## {r['dataset']}\n")[1].split("\n## ")[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| {r['model']} | "))
        assert row.endswith(f" | {ratio:.3f} |")


def test_memory_grid_recall_table_by_hand(memory_grid):
    root = memory_grid
    runs = read_csv(root / "runs.csv")
    table = {(r["dataset"], r["model"]): r for r in read_csv(root / "table.csv")}
    rows = read_csv(root / "recall_recall.csv")
    assert [(r["model"], r["delay"], r["n"]) for r in rows] == \
        [("lif", "0", "2"), ("lif", "1", "2"), ("mean_image", "0", "1"), ("mean_image", "1", "1")]
    for r in rows:
        label = f"mem_d{r['delay']}"
        for metric in ("mse", "ssim"):
            if r["model"] == "mean_image":
                assert float(r[f"{metric}_mean"]) == pytest.approx(float(table[(label, "mean_image")][
                    f"{metric}_mean"]), rel=1e-12)
                assert r[f"{metric}_lo"] == r[f"{metric}_hi"] == ""
                continue
            a, b = (float(x[metric]) for x in runs if x["dataset"] == label)
            mean, sd = (a + b) / 2, abs(a - b) / math.sqrt(2)
            half = T975[1] * sd / math.sqrt(2)
            assert (float(r[f"{metric}_mean"]), float(r[f"{metric}_lo"]), float(r[f"{metric}_hi"])) == \
                pytest.approx((mean, mean - half, mean + half), rel=1e-9)
    assert "Against the delay: `recall_recall.png` and `recall_recall.csv`" in (root / "table.md").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert (root / "recall_recall.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------- gradient norms


def test_grad_norm_stats_by_hand(tmp_path):
    from stcsnn.analysis.grid.aggregate import GRAD_KEYS, grad_norm_stats

    (tmp_path / "steps.csv").write_text("step,epoch,loss,lr,p_true,seconds,threads,grad_norm\n"
                                        "1,1,0.1,0.001,1,0.1,1,0.5\n2,1,0.1,0.001,1,0.1,1,2.0\n"
                                        "3,1,0.1,0.001,1,0.1,1,0.1\n4,1,0.1,0.001,1,0.1,1,3.0\n")
    stats = grad_norm_stats(tmp_path)
    # sorted 0.1, 0.5, 2.0, 3.0: median (0.5 + 2.0) / 2; 99th percentile at position 0.99 x 3 = 2.97 between
    # 2.0 and 3.0; two of four steps above the clip 1.0, by (2.0 + 3.0) / 2 on average
    assert stats == pytest.approx({"grad_norm_median": 1.25, "grad_norm_p99": 2.97, "grad_norm_max": 3.0,
                                   "clipped_share": 0.5, "clipped_excess": 2.5})
    assert grad_norm_stats(tmp_path, clip=10.0)["clipped_share"] == 0.0
    assert math.isnan(grad_norm_stats(tmp_path, clip=10.0)["clipped_excess"])
    (tmp_path / "steps.csv").write_text("step,epoch,loss\n1,1,0.1\n")  # an older run: no grad_norm column
    stats = grad_norm_stats(tmp_path)
    assert all(math.isnan(v) for v in stats.values()) and set(stats) == set(GRAD_KEYS)


def test_grid_lags_fresh_and_trained_per_cell(memory_grid, tmp_path, capsys):
    out = tmp_path / "grad"
    assert main(["--threads", "1", "analyze", "gradients", "--grid", str(memory_grid), "--lags", "--lag-probes", "2",
                 "--batch-size", "2", "--out", str(out)]) == 0
    rows = read_csv(out / "lags.csv")
    cells = {(r["dataset"], r["model"], r["seed"]) for r in rows}
    assert cells == {(d, "lif", s) for d in ("mem_d0", "mem_d1") for s in ("0", "1")}
    for cell in cells:
        states = {r["state"] for r in rows if (r["dataset"], r["model"], r["seed"]) == cell}
        assert states == {"fresh", "trained"}
    summary = read_csv(out / "lags_summary.csv")
    assert {r["seeds"] for r in summary} == {"2"} and (out / "lags_mem_d0.png").is_file()
    assert "|dx_hat[t+" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- comparisons


def test_comparisons_join_the_base_pairs_and_the_holm_family():
    from stcsnn.analysis.grid.aggregate import paired_differences
    from stcsnn.analysis.stats import holm
    from stcsnn.metrics import reported_metrics

    metrics = list(reported_metrics())
    mse = {("if", 0): 60.0, ("if", 1): 62.0, ("lif", 0): 55.0, ("lif", 1): 56.0, ("stc_lif", 0): 44.0,
           ("stc_lif", 1): 45.0, ("stc_lif_temporal", 0): 47.0, ("stc_lif_temporal", 1): 49.0}
    rows = [{"dataset": "d", "model": m, "seed": s, **{k: v + i for i, k in enumerate(metrics)}}
            for (m, s), v in mse.items()]
    comparisons = [("stc_lif", "lif"), ("stc_lif", "stc_lif_temporal"), ("stc_lif", "plif"), ("stc_lif", "if")]
    out = paired_differences(rows, comparisons)
    # the registry's pairs first (both STC-LIF variants wrap IF); then the comparisons present in the rows; the
    # one already a base pair and the one naming an absent model are not repeated
    assert [(p["stc"], p["base"], p["against"]) for p in out] == [
        ("stc_lif", "if", "base"), ("stc_lif_temporal", "if", "base"), ("stc_lif", "lif", "comparison"),
        ("stc_lif", "stc_lif_temporal", "comparison")]
    against_lif = out[2]
    assert [s["mse"] for s in against_lif["per_seed"]] == [44.0 - 55.0, 45.0 - 56.0]
    assert against_lif["mse_mean"] == -11.0 and against_lif["mse_stc_better"] == 2
    family = [p[f"{k}_p"] for p in out for k in metrics]
    assert [p[f"{k}_p_holm"] for p in out for k in metrics] == pytest.approx(holm(family))
