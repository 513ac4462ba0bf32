"""Sequential Fashion-MNIST with a dense STC-LIF layer: each image is read row by row (28 steps of 28 pixels).

    nn.Linear(28, H) -> build_layer("stc_lif", H) -> nn.Linear(H, 10), logits = mean over the 28 steps

Trained on the Fashion-MNIST subset shipped in the package (2000 training images), scored on its 500 held-out
test images (10 classes, chance 10 %)::

    python docs/examples/sequential_fmnist.py                  # 300 steps
    python docs/examples/sequential_fmnist.py --steps 100 --neuron lif
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import Tensor, nn

from stcsnn.data.formats import load_npz
from stcsnn.data.moving import EMBEDDED_NPZ
from stcsnn.neurons import build_layer


def load(split: str) -> tuple[Tensor, Tensor]:
    """``(images (N, 28, 28) float in [0, 1], labels (N,) int64)`` of the embedded subset (``train`` / ``test``)."""
    arrays = load_npz(EMBEDDED_NPZ, [f"{split}_images", f"{split}_labels"])
    images = torch.from_numpy(arrays[f"{split}_images"].astype(np.float32) / 255.0)
    return images, torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))


class RowClassifier(nn.Module):
    """Rows in, one spiking layer, a linear readout of the spikes averaged over time."""

    def __init__(self, hidden: int = 128, neuron: str = "stc_lif") -> None:
        super().__init__()
        self.synapse = nn.Linear(28, hidden)
        self.neuron = build_layer(neuron, hidden)
        self.readout = nn.Linear(hidden, 10)

    def forward(self, images: Tensor) -> Tensor:
        rows = images.transpose(0, 1)  # (28 steps, B, 28 pixels)
        spikes, _ = self.neuron.multi_step(self.synapse(rows))
        return self.readout(spikes).mean(0)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def train(steps: int = 300, hidden: int = 128, neuron: str = "stc_lif", batch: int = 64, lr: float = 1e-2,
          seed: int = 0) -> tuple[RowClassifier, float]:
    """Train for ``steps`` Adam steps; returns the model and its held-out (test split) accuracy."""
    torch.manual_seed(seed)
    images, labels = load("train")
    model = RowClassifier(hidden, neuron)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, accuracy(model, *load("test"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--neuron", default="stc_lif")
    args = parser.parse_args(argv)
    _, acc = train(args.steps, args.hidden, args.neuron)
    print(f"{args.neuron}, {args.steps} steps: held-out accuracy {acc:.1%} (chance 10%)")


if __name__ == "__main__":
    main()
