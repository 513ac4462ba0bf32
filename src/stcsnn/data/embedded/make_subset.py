"""Rebuild ``fashion_mnist_subset.npz``, the Fashion-MNIST subset shipped for the ``embedded`` dataset.

Takes, per class in label order, the first ``--train-per-class`` images of the Fashion-MNIST training set and
the first ``--test-per-class`` images of its test set (lowest original indices first), and stores them with
their labels and original indices::

    python src/stcsnn/data/embedded/make_subset.py [--source /usr/share/datasets/fashion-mnist]

The source directory holds the four original IDX files (Debian package ``dataset-fashion-mnist``, or the files
from https://github.com/zalandoresearch/fashion-mnist). The arrays are deterministic given the source files
(the zip timestamps are not).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stcsnn.data.formats import read_idx

HERE = Path(__file__).parent


def select(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Original indices: the first ``per_class`` of each class, classes 0..9, sorted ascending."""
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    if any(len(p) < per_class for p in picks):
        raise SystemExit("not enough images of some class")
    return np.sort(np.concatenate(picks)).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=HERE / "fashion_mnist_subset.npz")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=50)
    args = parser.parse_args()
    arrays = {}
    for split, prefix, per_class in (("train", "train", args.train_per_class),
                                     ("test", "t10k", args.test_per_class)):
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
        idx = select(labels, per_class)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[idx])
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
        arrays[f"{split}_indices"] = idx
    arrays["source"] = np.array("Fashion-MNIST (Zalando Research, MIT license), "
                                "https://github.com/zalandoresearch/fashion-mnist; *_indices are the "
                                "original indices in the train (60000) and t10k (10000) IDX files")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): "
          + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
