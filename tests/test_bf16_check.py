"""benchmarks/bf16_check.py: reading the run records, the verdict arithmetic and the report, on hand-written CSV
files with hand-computed values (no training: every run folder holds report.json, so the script skips it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import load_file, one_error

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bf16_check.py"


@pytest.fixture(scope="module")
def check():
    return load_file(SCRIPT, "bf16_check")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_run(run_dir: Path, late: float, val_mse: float) -> None:
    """A finished run's records: loss 1.0 for steps 1-200 and ``late`` for 201-300; ``val_mse`` after step 300
    (other epochs 99)."""
    rows = ["step,epoch,loss,lr"] + [f"{s},{(s - 1) // 100 + 1},{1.0 if s <= 200 else late},0.001"
                                    for s in range(1, 301)]
    write(run_dir / "steps.csv", "\n".join(rows) + "\n")
    write(run_dir / "metrics.csv", "epoch,step,train_loss,val_mse,val_mae\n1,100,1.0,99,5\n2,200,1.0,99,5\n"
          f"3,300,{late},{val_mse},5\n")
    write(run_dir / "report.json", "{}\n")


def test_read_step_losses_and_mean_over_a_step_range(check, tmp_path):
    path = write(tmp_path / "steps.csv", "step,epoch,loss,lr\n1,1,0.5,0.1\n2,1,0.4,0.1\n3,1,0.3,0.1\n4,1,0.1,0.1\n")
    losses = check.read_step_losses(path)
    assert losses == {1: 0.5, 2: 0.4, 3: 0.3, 4: 0.1}
    assert check.mean_loss(losses, 3, 4) == pytest.approx(0.2)
    assert check.mean_loss(losses, 1, 4) == pytest.approx(0.325)
    with pytest.raises(check.CheckError, match=r"every step 3\.\.5, missing 1 \(first: step 5\)"):
        check.mean_loss(losses, 3, 5)


def test_read_step_losses_refuses_what_train_does_not_write(check, tmp_path):
    with pytest.raises(check.CheckError, match="columns step,loss"):
        check.read_step_losses(write(tmp_path / "a.csv", "step,epoch,lr\n1,1,0.1\n"))
    with pytest.raises(check.CheckError, match="columns step,loss"):
        check.read_step_losses(write(tmp_path / "b.csv", "step,epoch,loss\n1,1,nope\n"))
    with pytest.raises(check.CheckError, match="cannot read"):
        check.read_step_losses(tmp_path / "missing.csv")


def test_read_val_mse_takes_the_row_of_the_step(check, tmp_path):
    path = write(tmp_path / "metrics.csv", "epoch,step,train_loss,val_mse\n1,100,0.3,30.5\n2,200,0.2,20.5\n"
                                           "3,300,0.1,10.5\n")
    assert check.read_val_mse(path) == 10.5  # the default step: 300, the last
    assert check.read_val_mse(path, 200) == 20.5
    with pytest.raises(check.CheckError, match="one row at step 400, found 0"):
        check.read_val_mse(path, 400)
    twice = write(tmp_path / "twice.csv", "epoch,step,val_mse\n3,300,1\n3,300,2\n")
    with pytest.raises(check.CheckError, match="one row at step 300, found 2"):
        check.read_val_mse(twice)
    with pytest.raises(check.CheckError, match="columns step,val_mse"):
        check.read_val_mse(write(tmp_path / "nocol.csv", "epoch,step,val_mae\n3,300,1\n"))


def test_curve_difference_is_the_mean_absolute_difference(check):
    assert check.curve_difference({1: 1.0, 2: 2.0}, {1: 1.5, 2: 1.0}) == pytest.approx(0.75)
    with pytest.raises(check.CheckError, match="same steps, found 2 and 1"):
        check.curve_difference({1: 1.0, 2: 2.0}, {1: 1.5})


def test_verdict_within_two_sample_sd_boundary_included(check):
    # fp32 1, 2, 3: mean 2, sample sd sqrt((1 + 0 + 1) / 2) = 1; limit 2
    v = check.verdict([1.0, 2.0, 3.0], [3.5, 4.0, 4.5])  # mean 4: difference 2, on the limit
    assert v == {"mean_fp32": 2.0, "sd_fp32": 1.0, "min_fp32": 1.0, "max_fp32": 3.0, "mean_bf16": 4.0,
                 "difference": 2.0, "limit": 2.0, "within": True}
    out = check.verdict([1.0, 2.0, 3.0], [4.0, 4.5, 4.5])  # mean 4.333: difference 2.333 > 2
    assert out["difference"] == pytest.approx(7 / 3) and not out["within"]
    with pytest.raises(check.CheckError, match="at least 2 fp32 seeds"):
        check.verdict([1.0], [1.0])


def test_curve_verdict(check):
    assert check.curve_verdict([0.1, 0.3], [0.2, 0.4, 0.6]) == {
        "mean_bf16_vs_fp32": pytest.approx(0.2), "mean_fp32_seed_to_seed": pytest.approx(0.4), "within": True}
    assert not check.curve_verdict([0.5], [0.2, 0.4])["within"]


def test_yaml_value_keeps_floats_floats(check):
    from stcsnn.config import parse_value

    assert check.yaml_value(1e-05) == "1.0e-05" and parse_value(check.yaml_value(1e-05)) == 1e-05
    assert check.yaml_value(0.001) == "0.001"
    assert check.yaml_value([64, 64, 64]) == "[64, 64, 64]"
    assert check.yaml_value(True) == "true"


def test_run_config_is_the_bench_small_configuration_at_300_steps(check):
    import json

    cfg = check.run_config("lif", 1)
    assert cfg["hidden_channels"] == [64, 64, 64] and cfg["kernel_size"] == 5 and cfg["patch_size"] == 4
    assert cfg["batch_size"] == 4 and cfg["input_frames"] == cfg["output_frames"] == 10
    assert (cfg["epochs"], cfg["steps_per_epoch"], cfg["val_every"]) == (3, 100, 1)
    assert cfg["lr"] == 1.0e-3 and cfg["max_val_batches"] == 4 and cfg["data_options"] == {}
    # the script reruns what the committed result ran (its config, recorded in bf16_check.json), key for key
    ran = json.loads((SCRIPT.parent / "results" / "cpu-bf16-check" / "bf16_check.json").read_text())["meta"]
    for neuron in ("lif", "stc_lif"):
        expected = {k: v for k, v in ran["config"][neuron].items() if k != "frame_shape"}
        got = check.run_config(neuron, 0)
        assert {k: got[k] for k in expected} == expected and set(got) - set(expected) <= {"data_options", "frame_shape"}
    assert (cfg["dataset"], cfg["neuron"], cfg["seed"], cfg["device"]) == ("mfmnist", "lif", 1, "cpu")


def test_main_reads_finished_runs_and_writes_the_report(check, tmp_path, capsys):
    # fp32 late loss 0.2, 0.4 (mean 0.3, sd 0.1414, limit 0.2828); bf16 0.25, 0.45 (mean 0.35): within.
    # fp32 val MSE 10, 14 (mean 12, sd 2.828, limit 5.657); bf16 20, 22 (mean 21, difference 9): outside.
    # curves differ only over steps 201-300: same seed |0.05| x 100/300 = 0.016667; fp32 seed 0 vs 1:
    # 0.2 x 100/300 = 0.066667: within.
    for name, late, val in (("lif-fp32-seed0", 0.2, 10), ("lif-fp32-seed1", 0.4, 14),
                            ("lif-bf16-seed0", 0.25, 20), ("lif-bf16-seed1", 0.45, 22)):
        fake_run(tmp_path / name, late, val)
    rc = check.main(["--neurons", "lif", "--seeds", "0,1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("finished earlier, skipped") == 4 and "training (log" not in out
    assert list((tmp_path / "logs").iterdir()) == []  # nothing was trained
    md = (tmp_path / "bf16_check.md").read_text()
    assert md in out
    assert "| 0 | 0.2 | 0.25 | 10 | 20 | 0.016667 |" in md
    assert "| 1 | 0.4 | 0.45 | 14 | 22 | 0.016667 |" in md
    assert ("- late loss: fp32 0.3 (sd 0.14142, 0.2..0.4), bf16 0.35; |difference| 0.05 <= 0.28284: **within** "
            "fp32's seed spread") in md
    assert "- val MSE: fp32 12 (sd 2.8284, 10..14), bf16 21; |difference| 9 > 5.6569: **OUTSIDE**" in md
    assert "- loss curve: bf16 vs fp32 same seed 0.016667, fp32 seed to seed 0.066667: **within**" in md
    assert "--neurons lif --seeds 0,1" in md and "torch " in md
    data = json.loads((tmp_path / "bf16_check.json").read_text())
    lif = data["neurons"]["lif"]
    assert lif["late_loss"]["mean_fp32"] == pytest.approx(0.3)
    assert lif["late_loss"]["sd_fp32"] == pytest.approx(math.sqrt(0.02))
    assert lif["val_mse"]["within"] is False and lif["late_loss"]["within"] is True
    assert lif["fp32_curve_difference_between_seeds"]["0-1"] == pytest.approx(0.2 / 3)
    assert data["meta"]["threads"] == 1


def test_main_bad_input_is_one_error_line(check, tmp_path, capsys):
    assert "2 different seeds" in one_error(capsys, check.main(["--seeds", "0", "--out", str(tmp_path)]))
    assert "comma-separated integers" in one_error(capsys, check.main(["--seeds", "0,x", "--out", str(tmp_path)]))
    # a finished run whose records are damaged: one line naming the file
    for name in ("lif-fp32-seed0", "lif-fp32-seed1", "lif-bf16-seed0", "lif-bf16-seed1"):
        fake_run(tmp_path / name, 0.2, 10)
    write(tmp_path / "lif-bf16-seed1" / "steps.csv", "step,epoch\n1,1\n")
    line = one_error(capsys, check.main(["--neurons", "lif", "--seeds", "0,1", "--out", str(tmp_path)]))
    assert "lif-bf16-seed1/steps.csv" in line and "columns step,loss" in line
