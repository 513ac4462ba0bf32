"""``stcsnn neurons`` and ``stcsnn demo``."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neurons", help="list the registered neurons")
    p.set_defaults(func=_neurons)
    p = sub.add_parser("demo", help="step every neuron over a random input and print spike rates")
    p.add_argument("--steps", type=_steps, default=10, help="time steps, 1 to 1000 (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _steps(text: str) -> int:
    """A demo of 1 to 1000 steps: the input is drawn whole up front, so the count bounds its memory."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or not 1 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps from 1 to 1000, got {text[:40]!r}")
    return n


def _neurons(args: argparse.Namespace) -> int:
    """One line per neuron: name, kind (snn/ann), the base an STC neuron wraps, description."""
    from stcsnn.neurons.registry import get_spec, list_neurons

    rows = list_neurons()
    width = max(len(n) for n, _ in rows)
    bases = [f"STC({get_spec(n).base})" if get_spec(n).is_stc else "-" for n, _ in rows]
    base_width = max(len(b) for b in bases)
    for (name, desc), base in zip(rows, bases):
        print(f"{name:<{width}}  {get_spec(name).kind}  {base:<{base_width}}  {desc}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from stcsnn.neurons.registry import build_neuron, get_spec, list_neurons

    torch.manual_seed(args.seed)
    x = torch.rand(args.steps, 2, 4, 16, 16) * 2
    for name, _ in list_neurons():
        if get_spec(name).is_ann:
            continue  # ANN baselines emit real values, not spikes
        cell = build_neuron(name, in_channels=4, hidden_channels=16, kernel_size=3)
        state, rates = None, []
        with torch.no_grad():
            for t in range(args.steps):
                s, state = cell(x[t], state)
                rates.append(s.mean().item())
        print(f"{name:<10} mean spike rate {sum(rates) / len(rates):.3f}  per step "
              + " ".join(f"{r:.2f}" for r in rates))
    return 0
