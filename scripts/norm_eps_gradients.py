"""The training gradient of a checkpoint at several GroupNorm epsilons: does a small epsilon blow it up?

    python scripts/norm_eps_gradients.py RUN/best.pt [RUN2/best.pt ...] [--eps 1e-5,1e-2,1]

For each checkpoint: its model in training mode, one batch of 8 training sequences of its own dataset and config,
the training objective without scheduled sampling on the plain path
(:func:`stcsnn.analysis.gradients.rollout_loss`), and the global gradient norm over all parameters, with every
GroupNorm's epsilon set to each value in turn (``1e-5`` is the default; the weights stay the same). A loss that
barely moves while the gradient norm changes by orders of magnitude is GroupNorm's 1/sqrt(var + eps) acting on
all-zero groups (blank frames, silent layers), not a real sensitivity of the loss. Prints one line per checkpoint."""

from __future__ import annotations

import argparse
import sys

import torch

import stcsnn
from stcsnn.analysis.common import get_batch
from stcsnn.analysis.gradients import rollout_loss
from stcsnn.data.splits import build_split


def gradient_norms(path: str, eps_values: list[float], batch: int = 8) -> dict[float, tuple[float, float]]:
    model, cfg = stcsnn.load_model(path)
    model.train()
    frames = get_batch(build_split(cfg, "train"), range(batch), torch.device("cpu"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    out = {}
    for eps in eps_values:
        for m in norms:
            m.eps = eps
        model.zero_grad(set_to_none=True)
        loss, _ = rollout_loss(model, frames, cfg)
        loss.backward()
        total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
        out[eps] = (loss.item(), total.item())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--eps", default="1e-5,1e-2,1", help="comma-separated GroupNorm epsilons")
    args = ap.parse_args(argv)
    eps_values = [float(v) for v in args.eps.split(",")]
    torch.manual_seed(0)
    for path in args.checkpoints:
        res = gradient_norms(path, eps_values)
        print(path + ": " + "; ".join(f"eps {e:g}: loss {l:.4f} |grad| {g:.3g}" for e, (l, g) in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
