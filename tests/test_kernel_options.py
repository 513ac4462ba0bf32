"""benchmarks/kernel_options.py: every alternative it times computes what today's code computes (the errors it
reports, checked here against float32 tolerances), and its --out folder rule. No time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_file

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "kernel_options.py"


@pytest.fixture(scope="module")
def options():
    return load_file(SCRIPT, "kernel_options")


def test_alternatives_compute_the_same_numbers(options):
    rows: list = []
    options.grouped_conv(rows, 1)
    options.deferred_weight_grad(rows, 1)
    options.norm_and_update(rows, 1)
    errors = {(r["part"], r["variant"]): r["max_rel_err"] for r in rows if "max_rel_err" in r}
    # the grouped convolution three ways, the batched weight gradient, the channels-last pathway: float32 rounding
    assert len([k for k in errors if k[0] == "grouped conv fp32"]) == 3
    for (part, _), err in errors.items():
        assert err < (2e-2 if "bfloat16" in part else 1e-5), (part, err)
    assert all(r["fwd_bwd_ms"] > 0 for r in rows if "fwd_bwd_ms" in r)


def test_table_lists_every_row(options):
    rows = [{"part": "p", "variant": "v", "forward_ms": 1.23456, "max_rel_err": 1.5e-7},
            {"part": "q", "variant": "w", "total_ms": 2.0}]
    lines = options.table(rows).splitlines()
    assert lines[2] == "| p | v | 1.235 |  |  |  | 1.5e-07 |"
    assert lines[3] == "| q | w |  |  | 2.000 |  |  |"


def test_out_must_be_new_or_empty(tmp_path):
    (tmp_path / "kept.txt").write_text("mine")
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and "--out must be a new or empty folder" in r.stderr
    assert "Traceback" not in r.stderr and (tmp_path / "kept.txt").read_text() == "mine"


def test_out_may_not_be_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "link")], capture_output=True, text=True)
    assert r.returncode != 0 and "not a symbolic link" in r.stderr and "Traceback" not in r.stderr
    assert not any(target.iterdir())


def test_writes_its_report(tmp_path):
    out = tmp_path / "new"  # a subprocess: the script sets torch's thread count for its process
    r = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--no-compile", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "kernel_options.json").read_text())
    assert "1 thread" in data["machine"] and len(data["rows"]) == 11
    assert (out / "kernel_options.md").read_text().count("\n| ") == 12  # header + 11 rows
