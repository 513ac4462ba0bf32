"""Datasets by name, with the files each needs (download URLs, published SHA-256 checksums).

Only published checksums, plus local hashes of the Debian copies: TensorFlow Datasets' ``url_checksums``
files (mnist.txt, fashion_mnist.txt, moving_mnist.txt) give SHA-256 and size of the MNIST, Fashion-MNIST and
Moving MNIST files. The Debian ``dataset-fashion-mnist`` copies were hashed on an installed system: they
decompress to 60000/10000 28x28 images and are smaller than the upstream files by exactly the length of the
file name that upstream's gzip header stores (24 and 23 bytes): the same data, re-packed without that field.
TaxiBJ and KTH (OpenSTL release archives) have no published checksum.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stcsnn.data.arrays import build_npy
from stcsnn.data.base import SequenceDataset, check_split, resolve_root
from stcsnn.data.download import Checksum, FileSpec
from stcsnn.data.kth import ACTIONS, build_kth
from stcsnn.data.moving import build_embedded, build_mfmnist, build_mmnist, mfmnist_sources
from stcsnn.data.taxibj import build_taxibj
from stcsnn.errors import DataError

TFDS = "TensorFlow Datasets url_checksums/{}.txt"
DEBIAN = "Debian dataset-fashion-mnist copy, hashed locally"
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/")
FMNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                  "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
OPENSTL_RELEASE = "https://github.com/chengtan9907/OpenSTL/releases/download/v0.1.0/"

MNIST_TRAIN = FileSpec(
    "moving_mnist/train-images-idx3-ubyte.gz", tuple(m + "train-images-idx3-ubyte.gz" for m in MNIST_MIRRORS),
    (Checksum("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422,
              TFDS.format("mnist")),),
    note="MNIST training images (IDX, gzip)")
MNIST_TEST_SEQ = FileSpec(
    "moving_mnist/mnist_test_seq.npy", ("https://www.cs.toronto.edu/~nitish/unsupervised_video/mnist_test_seq.npy",
                                        "http://www.cs.toronto.edu/~nitish/unsupervised_video/mnist_test_seq.npy"),
    (Checksum("c2a3e8d3939c001ab77bf543f130157424efa486bb4d0974d2cebb773b13f8b3", 819200096,
              TFDS.format("moving_mnist")),),
    note="the fixed Moving MNIST test set (uint8 (20, 10000, 64, 64), 819200096 bytes)")
FMNIST_TRAIN = FileSpec(
    "moving_fmnist/train-images-idx3-ubyte.gz",
    tuple(m + "train-images-idx3-ubyte.gz" for m in FMNIST_MIRRORS),
    (Checksum("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880,
              TFDS.format("fashion_mnist")),
     Checksum("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", 26421856, DEBIAN)),
    note="Fashion-MNIST training images (IDX, gzip); also `apt install dataset-fashion-mnist`")
FMNIST_TEST = FileSpec(
    "moving_fmnist/t10k-images-idx3-ubyte.gz", tuple(m + "t10k-images-idx3-ubyte.gz" for m in FMNIST_MIRRORS),
    (Checksum("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102,
              TFDS.format("fashion_mnist")),
     Checksum("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", 4422079, DEBIAN)),
    note="Fashion-MNIST test images (IDX, gzip); test sequences are generated from them")
TAXIBJ_ZIP = FileSpec(
    "taxibj/taxibj_dataset.zip", (OPENSTL_RELEASE + "taxibj_dataset.zip",), extract_to="taxibj",
    provides=("taxibj/dataset.npz",), note="OpenSTL's TaxiBJ archive, unpacked to taxibj/dataset.npz")
KTH_ZIP = FileSpec(
    "kth/kth_action.zip", (OPENSTL_RELEASE + "kth_action.zip",), extract_to="kth",
    provides=tuple(f"kth/{a}" for a in ACTIONS),
    note="OpenSTL's KTH frames, unpacked to kth/<action>/<personXX_action_dY_uncomp>/image_NNNN.jpg; or the "
         "original videos from https://www.csc.kth.se/cvap/actions/ converted to such frames (e.g. "
         "`ffmpeg -i person01_boxing_d1_uncomp.avi image_%04d.jpg`)")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: ``build(split, root, **options)``; ``files(root)`` lists ``(FileSpec, path)`` with the path
    where the file was found or, when missing, where it belongs."""

    name: str
    description: str
    build: Callable[..., SequenceDataset]
    files: Callable[[str | None], list[tuple[FileSpec, Path]]]


def _at_root(*specs: FileSpec) -> Callable[[str | None], list[tuple[FileSpec, Path]]]:
    return lambda root: [(s, resolve_root(root) / s.path) for s in specs]


def _mfmnist_files(root: str | None) -> list[tuple[FileSpec, Path]]:
    src = mfmnist_sources(root)
    return [(FMNIST_TRAIN, src.train_images), (FMNIST_TEST, src.test_images)]


DATASETS: dict[str, DatasetSpec] = {
    s.name: s for s in (
        DatasetSpec("embedded", "offline default: moving Fashion-MNIST from the subset shipped in the "
                    "package (10 -> 10, 1x64x64)", build_embedded, lambda root: []),
        DatasetSpec("mmnist", "Moving MNIST (10 -> 10, 1x64x64); test = fixed mnist_test_seq.npy",
                    build_mmnist, _at_root(MNIST_TRAIN, MNIST_TEST_SEQ)),
        DatasetSpec("mfmnist", "Moving Fashion-MNIST (10 -> 10, 1x64x64); test generated from test images",
                    build_mfmnist, _mfmnist_files),
        DatasetSpec("taxibj", "TaxiBJ crowd flows (4 -> 4, 2x32x32), OpenSTL's dataset.npz", build_taxibj,
                    _at_root(TAXIBJ_ZIP)),
        DatasetSpec("kth", "KTH human actions (10 -> 20, 1x128x128), OpenSTL's frame folders", build_kth,
                    _at_root(KTH_ZIP)),
        DatasetSpec("npy", "your own videos: .npy/.npz arrays (N, T, C, H, W) or (N, T, H, W)", build_npy,
                    lambda root: []),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        hint = difflib.get_close_matches(str(name), DATASETS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise DataError(f"unknown dataset {name!r}{did_you_mean}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def list_datasets() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]``."""
    return [(s.name, s.description) for s in DATASETS.values()]


def build_dataset(name: str, split: str, root: str | None = None, **options: Any) -> SequenceDataset:
    """The ``split`` ("train", "val" or "test") of dataset ``name``. Items are ``(inputs, targets)``, float32
    (T_in, C, H, W) and (T_out, C, H, W) in [0, 1]. ``root``: the data root (default ``$STCSNN_DATA`` or
    ``./data``); ``options``: the dataset's options (``input_frames``, ``output_frames``, ...)."""
    spec = get_dataset_spec(name)
    check_split(split)
    return spec.build(split, None if root is None else str(root), **options)
