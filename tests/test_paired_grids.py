"""scripts/paired_grids.py: two grids' cells paired by seed, each metric's B - A difference summarised, checked
against SciPy's paired t-test and by hand (Holm, the 'better' count by the metric's direction)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_file, one_error

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paired_grids.py"
pg = load_file(SCRIPT, "paired_grids")

COLUMNS = ["dataset", "model", "kind", "seed", "mse", "mae", "ssim", "psnr", "params"]


def write_runs(folder: Path, rows: list[tuple]) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(r)
    return folder


@pytest.fixture
def grids(tmp_path):
    # tclif: 3 seeds in A, 4 in B (seed 3 has no partner); stc_tclif: seed 2 without a test result in B
    a = write_runs(tmp_path / "a", [
        ("mf", "tclif", "SNN", 0, 60.0, 180.0, 0.40, 15.0, 10), ("mf", "tclif", "SNN", 1, 62.0, 181.0, 0.41, 15.1, 10),
        ("mf", "tclif", "SNN", 2, 61.0, 179.0, 0.39, 15.2, 10),
        ("mf", "stc_tclif", "SNN", 0, 50.0, 150.0, 0.50, 16.0, 12),
        ("mf", "stc_tclif", "SNN", 1, 52.0, 151.0, 0.52, 16.1, 12),
        ("mf", "stc_tclif", "SNN", 2, 51.0, 152.0, 0.51, 16.2, 12)])
    b = write_runs(tmp_path / "b", [
        ("mf", "tclif", "SNN", 0, 55.0, 170.0, 0.45, 15.5, 10), ("mf", "tclif", "SNN", 1, 58.0, 182.0, 0.44, 15.4, 10),
        ("mf", "tclif", "SNN", 2, 54.5, 171.0, 0.46, 15.9, 10), ("mf", "tclif", "SNN", 3, 1.0, 1.0, 0.99, 40.0, 10),
        ("mf", "stc_tclif", "SNN", 0, 49.0, 149.0, 0.49, 16.3, 12),
        ("mf", "stc_tclif", "SNN", 1, 53.0, 150.0, 0.53, 16.0, 12),
        ("mf", "stc_tclif", "SNN", 2, "", "", "", "", 12)])
    return a, b


def test_differences_match_scipy_and_holm_by_hand(grids):
    stats = pytest.importorskip("scipy.stats")
    a, b = grids
    rows = pg.compare(pg.read_runs(a), pg.read_runs(b), ("mse", "ssim"))
    by = {(r["model"], r["metric"]): r for r in rows}
    assert set(by) == {("stc_tclif", "mse"), ("stc_tclif", "ssim"), ("tclif", "mse"), ("tclif", "ssim")}
    t = by[("tclif", "mse")]
    assert t["seeds"] == [0, 1, 2]  # seed 3 has no partner in A
    diffs = np.array([55.0 - 60.0, 58.0 - 62.0, 54.5 - 61.0])
    assert t["mean"] == pytest.approx(diffs.mean())
    ref = stats.ttest_rel([55.0, 58.0, 54.5], [60.0, 62.0, 61.0])
    assert t["p_t"] == pytest.approx(ref.pvalue, rel=1e-6)
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert t["ci_t"] == pytest.approx((diffs.mean() - half, diffs.mean() + half), rel=1e-6)
    assert t["better"] == 3  # lower MSE is better: B lower on all three seeds
    s = by[("stc_tclif", "ssim")]
    assert s["seeds"] == [0, 1] and s["better"] == 1  # higher SSIM is better: 0.53 > 0.52 only
    # Holm over the four rows: the i-th smallest p times (4 - i), kept monotone, capped at 1
    ps = sorted(r["p_t"] for r in rows)
    want, running = [], 0.0
    for i, p in enumerate(ps):
        running = max(running, min(1.0, (4 - i) * p))
        want.append(running)
    assert sorted(r["p_holm"] for r in rows) == pytest.approx(want)


def test_table_names_the_grids(grids, capsys):
    a, b = grids
    assert pg.main([str(a), str(b), "--names", "sg,grad", "--metrics", "mse"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| dataset | model | metric | seeds | sg (mean ± sd) | grad (mean ± sd) | grad − sg")
    assert len(out) == 4  # header, rule, one MSE row per model
    assert out[3].startswith("| mf | tclif | MSE | 0,1,2 | 61.0000 ± 1.0000 | 55.8333 ± ")
    assert out[3].endswith("| 3/3 |")


@pytest.mark.parametrize("argv, says", [
    (["{a}", "{tmp}/none"], "found no"),
    (["{a}", "{b}", "--names", "one"], "--names expects two"),
    (["{a}", "{b}", "--metrics", "mse,nope"], "--metrics expects names from"),
])
def test_bad_input_is_one_error_line(grids, tmp_path, capsys, argv, says):
    a, b = grids
    rc = pg.main([x.format(a=a, b=b, tmp=tmp_path) for x in argv])
    assert says in one_error(capsys, rc)


def test_a_csv_without_the_columns_is_refused(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "runs.csv").write_text("model,seed\nlif,0\n")
    rc = pg.main([str(tmp_path / "x"), str(tmp_path / "x")])
    assert "found no 'dataset'" in one_error(capsys, rc)


def test_rows_in_natural_order(tmp_path):
    rows = [(d, "if", "SNN", s, 10.0 + s, 1.0, 0.5, 20.0, 1) for d in ("recall_d10", "recall_d5", "recall_d0")
            for s in (0, 1)]
    a = write_runs(tmp_path / "a", rows)
    b = write_runs(tmp_path / "b", [(*r[:4], r[4] + 1.0, *r[5:]) for r in rows])
    out = pg.compare(pg.read_runs(a), pg.read_runs(b), ("mse",))
    assert [r["dataset"] for r in out] == ["recall_d0", "recall_d5", "recall_d10"]
