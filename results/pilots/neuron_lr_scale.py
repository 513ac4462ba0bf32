"""Pilot only: the neuron's scalars (0-dim parameters: LM-H's couplings) at NEURON_LR_SCALE x the learning rate
(0: frozen), every other parameter as configured. Patches the trainer's optimizer and learning-rate setting, then
runs the command line: ``NEURON_LR_SCALE=0.1 python neuron_lr_scale.py --threads 1 train --config ... --out DIR``."""

import os
import sys

import torch

import stcsnn.train.loop as L
from stcsnn.cli import main

SCALE = float(os.environ["NEURON_LR_SCALE"])
_Adam = torch.optim.Adam


def Adam(params, lr, weight_decay):
    params = list(params)
    scal = [p for p in params if p.dim() == 0]
    rest = [p for p in params if p.dim() != 0]
    print(f"pilot: {len(scal)} scalar params at x{SCALE}", file=sys.stderr)
    return _Adam([{"params": rest, "scale": 1.0}, {"params": scal, "scale": SCALE}], lr=lr, weight_decay=weight_decay)


L.torch.optim.Adam = Adam
_begin = L.Trainer._begin_epoch


def _wrapped(self):
    loader = _begin(self)
    for g in self.optimizer.param_groups:
        g["lr"] = self.lr * g.get("scale", 1.0)
    return loader


L.Trainer._begin_epoch = _wrapped
sys.exit(main(sys.argv[1:]))
