"""The README's Usage commands work as written, in the order printed, on a fresh copy of the repository.

The main job (the command of ``scripts/quickstart.sh``) and then every ```bash block of the README's "Usage"
section run, in order, in one bash script (``set -euo pipefail``:
the first failing command fails the test) in a copy of the repository's files, with the environment that runs
the tests as its ``.venv``. ``STCSNN_SET`` (the CLI's environment overrides, see ``stcsnn.config.ENV_SET``)
shrinks every training run to a few steps: the commands are the README's, only their budgets are small.

A block that cannot run here is marked on the page, visibly, with ``<!-- not-run: reason -->`` on the line above
it (a GPU, the network, several machines, hours of compute); those blocks are listed in ``NOT_RUN`` and a test fails
when the marked blocks differ from that list, so none is skipped silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The Usage blocks marked as not run, by their reason. A new one has to be added here, on purpose.
NOT_RUN = {
    "needs a GPU and the Moving MNIST files",
    "needs the reference code's checkpoint file",
    "needs several processes or machines",
    "downloads from the network",
    "hours of compute",
}

#: Every training run a few steps on a few sequences (the command line's own --set still wins).
SMOKE = ("epochs=1;steps_per_epoch=2;batch_size=2;max_val_batches=1;max_test_batches=1;"
         "data_options.num_samples=8;data_options.val_samples=2;data_options.test_samples=4")

FENCE = re.compile(r"^```(?P<info>\S*)\s*$")
NOT_RUN_COMMENT = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")


def usage_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, not-run reason)`` of every bash block between ``## Usage`` and the next ``## `` heading."""
    lines = text.splitlines()
    start = lines.index("## Usage")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    blocks, i = [], start
    while i < end:
        m = FENCE.match(lines[i])
        if m and m["info"]:
            j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "```")
            if m["info"] == "bash":
                above = NOT_RUN_COMMENT.match(lines[i - 1]) if i else None
                blocks.append((i + 1, "\n".join(lines[i + 1:j]), above["reason"] if above else None))
            i = j
        i += 1
    return blocks


def test_the_not_run_blocks_are_exactly_the_listed_ones():
    marked = {reason for _, _, reason in usage_blocks(README.read_text()) if reason is not None}
    assert marked == NOT_RUN


def _copy_of_the_repository(dest: Path) -> Path:
    """The files git would give a fresh clone (tracked, plus untracked ones it does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.slow
def test_usage_commands_run_in_order_on_a_fresh_copy(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout (git ls-files) to copy the repository as a clone would")
    clone = _copy_of_the_repository(tmp_path / "clone")
    (clone / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests is the clone's .venv
    # the main job first, as the README's set-up command runs it (scripts/quickstart.sh without its venv set-up)
    quickstart = [line for line in (ROOT / "scripts" / "quickstart.sh").read_text().splitlines()
                  if line.startswith("stcsnn ")]
    assert len(quickstart) == 1, quickstart
    runnable = ['export PATH="$PWD/.venv/bin:$PATH"', quickstart[0].replace('"$@"', "").strip()]  # as _env.sh
    runnable += [code for _, code, reason in usage_blocks(README.read_text()) if reason is None]
    script = clone / "readme.sh"
    script.write_text("set -euo pipefail\nset -x\n" + "\n".join(runnable) + "\n")
    env = dict(os.environ, STCSNN_SET=SMOKE, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", str(script)], cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, f"a README command failed (exit {r.returncode}):\n{r.stderr[-6000:]}"
