"""STC-LIF inference under each memory-layout policy, interleaved, one process (1 thread).

    python benchmarks/infer_policy.py [--neuron stc_lif] [--repeats 5]

The `small` bench configuration (hidden 64 x 3, kernel 5, patch 4, batch 4, 10 -> 10 frames of 1x64x64), no
gradients; each policy's rollout timed in turn per round after 2 warm-up rollouts each; medians printed. Every
policy computes the same numbers (tests/test_fast_path.py); only the layout differs. Why: oneDNN picks kernels by
CPU, and the default inference layout for STC on a CPU is chosen by the CPU's name
(``stcsnn.models.predictor.CPU_INFERENCE_LAYOUT``: channels-last end to end, measured faster on an AMD EPYC;
batched NCHW on Intel, measured faster on an Intel Xeon); this checks it on the machine at hand. Nothing here
asserts a time."""

from __future__ import annotations

import argparse
import time

import torch

from stcsnn.device import cpu_model
from stcsnn.models import SpikingPredictor, choose_policy
from stcsnn.models.predictor import END_TO_END, ExecutionPolicy

POLICIES = {
    "end_to_end": ExecutionPolicy(fast=True, channels_last=END_TO_END),
    "batched+grouped": ExecutionPolicy(fast=True, channels_last=("batched", "grouped")),
    "batched": ExecutionPolicy(fast=True, channels_last=("batched",)),
    "none (NCHW)": ExecutionPolicy(fast=True, channels_last=()),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neuron", default="stc_lif")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SpikingPredictor(args.neuron, 1, [64, 64, 64], 5, 4).eval()
    x = torch.rand(4, 20, 1, 64, 64)
    times: dict[str, list[float]] = {k: [] for k in POLICIES}
    with torch.no_grad():
        for policy in POLICIES.values():
            for _ in range(2):
                model.rollout(x, 10, 10, policy=policy)
        for _ in range(args.repeats):
            for name, policy in POLICIES.items():
                t = time.perf_counter()
                model.rollout(x, 10, 10, policy=policy)
                times[name].append(time.perf_counter() - t)
    default = choose_policy("cpu", stc=model.is_stc, training=False, cpu=cpu_model())
    for name, v in times.items():
        mark = "  <- default on this CPU" if POLICIES[name] == default else ""
        print(f"{args.neuron} {name:32s} median {sorted(v)[len(v) // 2] * 1e3:.1f} ms{mark}")
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
