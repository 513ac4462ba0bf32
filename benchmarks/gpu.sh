#!/usr/bin/env bash
# The paper-configuration benchmark on a CUDA GPU: fast path vs the plain path, peak memory, roofline,
# activation checkpointing at 20 frames, and a bf16-autocast run. Writes bench.json / bench.md per run.
#
#   benchmarks/gpu.sh [OUT_DIR]          (from the repository root, stcsnn installed, a CUDA GPU visible)
#
# Budget: a few minutes on an A100/H100/H200-class GPU (each variant runs in a fresh process; every run is
# capped by `timeout`). Environment: NEURONS (default stc_lif,lif,convlstm when registered), REPEATS (5),
# PYTHON (python).
#
# NOTE: written and checked on a CPU-only machine -- it has not been run on a GPU yet. Quote its numbers only
# after running it, with the GPU model it prints.
set -euo pipefail
OUT=${1:-runs/bench-gpu}
PY=${PYTHON:-python}
REPEATS=${REPEATS:-5}
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: no CUDA device visible")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
if [ -z "${NEURONS:-}" ]; then
  NEURONS=$("$PY" -c "from stcsnn.neurons import list_neurons; n=[x for x,_ in list_neurons()]; \
print(','.join(x for x in ('stc_lif','lif','convlstm') if x in n))")
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>/dev/null || true

# 1) fp32 (cuDNN may use TF32, torch's default for convolutions), paper configuration: every neuron listed,
#    fast vs plain; STC-LIF also with activation checkpointing over K = 5 and K = 2 steps (20 frames).
timeout 480 "$PY" -m stcsnn bench --config paper --device cuda --neurons "$NEURONS" --repeats "$REPEATS" \
  --checkpoint-steps 5,2 --checkpoint-neurons stc_lif --out "$OUT/fp32"

# 2) bf16 autocast, STC-LIF only (fast vs plain).
timeout 240 "$PY" -m stcsnn bench --config paper --device cuda --neurons stc_lif --repeats "$REPEATS" \
  --checkpoint-steps 0 --amp bf16 --out "$OUT/bf16"

echo "wrote $OUT/fp32/bench.md and $OUT/bf16/bench.md"
