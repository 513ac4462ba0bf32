"""The entry point of each measuring subprocess of ``stcsnn bench`` (:data:`stcsnn.perf.bench.CHILD_CODE`,
:func:`stcsnn.perf.bench.run_child`): ``python -m stcsnn.perf.commands --child TASK SPEC_JSON`` runs one
measurement. The command line itself is :mod:`stcsnn.cli.perf`."""

from __future__ import annotations

import json
import sys
from typing import Any

from stcsnn.errors import StcsnnError
from stcsnn.perf import bench


def run_task(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement: ``roof`` (the convolution roof of one precision), ``variant`` (one variant of one
    neuron), ``threads`` (the thread settings of one neuron) or ``stream`` (the streaming latency of one
    neuron, torch and ONNX Runtime)."""
    if task == "roof":
        return bench.measure_roof(spec)
    if task == "variant":
        return bench.run_variant(spec)
    if task == "threads":
        return bench.run_threads(spec)
    if task == "stream":
        return bench.measure_stream(spec)
    raise StcsnnError(f"unknown benchmark task {task!r}: expected roof, variant, threads or stream")


def child_main(argv: list[str]) -> int:
    """``--child TASK SPEC_JSON``: run one measurement and print its result as one JSON line (the last line of
    stdout is what the parent reads)."""
    task, spec = argv[0], json.loads(argv[1])
    print(json.dumps(run_task(task, spec)))
    return 0


if __name__ == "__main__":  # ``--child TASK SPEC``: one measurement; the command line is ``stcsnn bench``
    if len(sys.argv) < 4 or sys.argv[1] != "--child":
        print("error: python -m stcsnn.perf.commands runs one measurement for stcsnn bench: expected --child TASK "
              "SPEC_JSON; the benchmark itself is `stcsnn bench` (or python benchmarks/bench.py)", file=sys.stderr)
        sys.exit(2)
    sys.exit(child_main(sys.argv[2:]))
