# Sourced by the other scripts: create (or reuse) ./.venv and install stcsnn into it.
# Usage: source scripts/_env.sh EXTRAS      (e.g. "cli,viz" or "dev")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STCSNN_VENV:-$ROOT/.venv}"
EXTRAS="${1:-cli,viz}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[stcsnn] creating virtual environment $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# An unpinned `torch` makes pip fetch a multi-GB CUDA build; when no torch is importable we install
# the CPU wheel explicitly. STCSNN_TORCH overrides the pip arguments, e.g. on a machine without a local CPU wheel:
#   STCSNN_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" bash scripts/test.sh
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[stcsnn] installing PyTorch (${STCSNN_TORCH:-torch==2.13.0})"
    # shellcheck disable=SC2086  # word splitting wanted: STCSNN_TORCH may hold several pip arguments
    "$PY" -m pip install -q ${STCSNN_TORCH:-torch==2.13.0}
fi
# Reinstall only when pyproject.toml changed since the last install (fast re-runs).
STAMP="$VENV/.stcsnn-installed-$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || ! "$PY" -c "import stcsnn" >/dev/null 2>&1; then
    echo "[stcsnn] installing stcsnn[$EXTRAS] (editable)"
    "$PY" -m pip install -q -e "$ROOT[$EXTRAS]"
    touch "$STAMP"
fi
# The interop tests (tests/test_interop.py) run against SpikingJelly too; its declared requirements would pull
# torchvision/torchaudio (which must match the torch build), and its activation_based modules need only loguru
# beside what dev has, so both are installed without dependencies.
if [[ ",$EXTRAS," == *",dev,"* ]] && ! "$PY" -c "import spikingjelly.activation_based" >/dev/null 2>&1; then
    echo "[stcsnn] installing spikingjelly (--no-deps) for the interop tests"
    "$PY" -m pip install -q --no-deps "spikingjelly==2.0.0" "loguru>=0.7"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
