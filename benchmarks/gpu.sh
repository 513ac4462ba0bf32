#!/usr/bin/env bash
# The first checks on a CUDA GPU, most important first, each part under its own `timeout`, all of them
# under 8 minutes together (a session's device command may run 10):
#   1. tests/test_cuda.py (the CUDA paths against the CPU and the plain path)          <= 150 s
#   2. quickstart training on --device cuda (400 steps, then the test-split report)    <= 150 s
#   3. the paper configuration's training step, lif and stc_lif, fast vs plain:
#      fp32, then bf16 autocast (stcsnn bench --config paper --device cuda)           <= 2 x 80 s
# A part that fails or runs out of time is recorded and the next one still runs; the exit status is 1
# when any part failed. Results: OUT_DIR/{tests.log, quickstart/, bench-fp32/, bench-bf16/, summary.txt}.
#
#   benchmarks/gpu.sh [OUT_DIR]       from the repository root; OUT_DIR defaults to $OUT (the folder a device
#                                     session brings back), else benchmarks/results/gpu
#   GPU_SH_CPU=1 benchmarks/gpu.sh    the same parts on --device cpu with tiny sizes: checks this script
#
# stcsnn runs from this tree (PYTHONPATH=src), nothing installed; PYTHON (default python3). pytest must be
# importable for part 1 (else part 1 is recorded as skipped; pytest is pure Python: put it on PYTHONPATH).
#
# NOTE: written and checked on a CPU-only machine (GPU_SH_CPU=1) -- it has not run on a GPU yet. Quote its
# numbers only after running it, with the GPU model it prints.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-benchmarks/results/gpu}}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
CPU=${GPU_SH_CPU:-0}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
FAILED=0

if [ "$CPU" = 1 ]; then
  DEVICE=cpu
  TRAIN_SETS=(--set epochs=1 --set steps_per_epoch=3 --set warmup_epochs=0 --set max_val_batches=1
              --set max_test_batches=1 --set "hidden_channels=[16]")
  BENCH=(--config small --device cpu --repeats 1 --warmup 0 --skip-roof)
  AMPS=(fp32 bf16)
else
  DEVICE=cuda
  TRAIN_SETS=()
  BENCH=(--config paper --device cuda --repeats 3)
  AMPS=(fp32 bf16)
fi

# part NAME SECONDS COMMAND...: runs COMMAND under `timeout`, its output in OUT_DIR/NAME.log; notes the result
part() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (at most ${limit} s): $*"
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  tail -n 15 "$OUT_DIR/$name.log"
  if [ "$rc" = 0 ]; then
    echo "$name: ok ($(( $(date +%s) - start )) s)" | tee -a "$SUMMARY"
  else
    [ "$rc" = 124 ] && why="timed out after ${limit} s" || why="exit status $rc"
    echo "$name: FAILED, $why ($(( $(date +%s) - start )) s)" | tee -a "$SUMMARY"
    FAILED=1
  fi
}

"$PY" - "$DEVICE" <<'PY' 2>&1 | tee -a "$SUMMARY"
import sys, torch
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.sh: no CUDA device visible (GPU_SH_CPU=1 checks the script on the CPU)")
    print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
else:
    print("CPU check of benchmarks/gpu.sh | torch", torch.__version__)
PY
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
[ "$CPU" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu.txt" 2>/dev/null

# 1) the CUDA tests (on the CPU: their CPU half)
if "$PY" -c "import pytest" 2>/dev/null; then
  part tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
else
  echo "tests: skipped, pytest is not importable by $PY" | tee -a "$SUMMARY"
  FAILED=1
fi

# 2) the quickstart run on the device (400 steps of batch 8; report.json holds the test-split metrics)
rm -rf "$OUT_DIR/quickstart"
part quickstart 150 "$PY" -m stcsnn train --config configs/quickstart.yaml --device "$DEVICE" "${TRAIN_SETS[@]}" \
  --out "$OUT_DIR/quickstart"

# 3) the paper configuration's training step (and inference), lif and stc_lif, fast vs plain; fp32 then bf16
for amp in "${AMPS[@]}"; do
  flags=()
  [ "$amp" = fp32 ] || flags=(--amp "$amp")
  part "bench-$amp" 80 "$PY" -m stcsnn bench "${BENCH[@]}" --neurons lif,stc_lif --checkpoint-steps 0 \
    "${flags[@]}" --out "$OUT_DIR/bench-$amp"
done

echo "== summary ($SUMMARY)"
cat "$SUMMARY"
exit "$FAILED"
