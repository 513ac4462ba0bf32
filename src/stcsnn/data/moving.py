"""Moving MNIST (``mmnist``), Moving Fashion-MNIST (``mfmnist``) and the offline default (``embedded``).

The generator follows the reference (Srivastava et al. 2015, as in OpenSTL): each of ``num_digits`` 28x28
images moves on a ``canvas_size`` square canvas; its position lives in [0, 1]^2 and is scaled by
``canvas_size - 28`` pixels (truncated to integers); it starts uniformly at random with a uniformly random
direction, moves 0.1 per frame (the step is taken before each frame is drawn), and bounces off the borders
(clamped to [0, 1], that velocity component flipped). Digits are combined with a pixel-wise max; values /255.

Reproducible and resumable: train item ``i`` of epoch ``e`` is drawn from
``np.random.default_rng([seed, 0, e, i])`` (call ``set_epoch(e)``); validation and generated test items from
``np.random.default_rng([eval_seed, 1 or 2, 0, i])``, fixed whatever the epoch or the training seed.

Checksums: only published ones, plus local hashes of the Debian copies. TensorFlow Datasets' ``url_checksums``
files (mnist.txt, fashion_mnist.txt, moving_mnist.txt) give SHA-256 and size of the MNIST, Fashion-MNIST and
Moving MNIST files. The Debian ``dataset-fashion-mnist`` copies were hashed on an installed system: they
decompress to 60000/10000 28x28 images and are smaller than the upstream files by exactly the length of the
file name that upstream's gzip header stores (24 and 23 bytes): the same data, re-packed without that field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stcsnn.data.base import (
    SequenceDataset,
    check_split,
    frame_counts,
    positive_int,
    resolve_root,
    take_options,
)
from stcsnn.data.download import Checksum, FileSpec, sha256_file
from stcsnn.data.formats import describe_content, load_npy, load_npz, read_idx, require_file
from stcsnn.data.registry import DatasetSpec, FrameShape, files_at_root, register_dataset
from stcsnn.errors import DataError

STEP = 0.1
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_NPZ = Path(__file__).parent / "embedded" / "fashion_mnist_subset.npz"
STREAMS = {"train": 0, "val": 1, "test": 2}


def trajectory(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Positions ``(n_frames, 2)`` as (y, x) in [0, 1] of one bouncing object (see the module docstring)."""
    x, y = rng.random(), rng.random()
    theta = rng.random() * 2 * np.pi
    vy, vx = np.sin(theta) * STEP, np.cos(theta) * STEP
    out = np.empty((n_frames, 2))
    for t in range(n_frames):
        y, x = y + vy, x + vx
        if x <= 0.0 or x >= 1.0:
            x, vx = min(max(x, 0.0), 1.0), -vx
        if y <= 0.0 or y >= 1.0:
            y, vy = min(max(y, 0.0), 1.0), -vy
        out[t] = y, x
    return out


def moving_sequence(images: np.ndarray, rng: np.random.Generator, n_frames: int, num_digits: int,
                    canvas_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sequence from ``images`` (N, h, w) uint8: ``(frames, positions, indices)`` with frames uint8
    ``(n_frames, canvas_size, canvas_size)``, positions ``(num_digits, n_frames, 2)`` in [0, 1] (y, x) and
    the image indices ``(num_digits,)``. Top-left pixel at frame t: ``int(position * (canvas - h))``.
    """
    h, w = images.shape[1:]
    frames = np.zeros((n_frames, canvas_size, canvas_size), dtype=np.uint8)
    positions = np.empty((num_digits, n_frames, 2))
    indices = np.empty(num_digits, dtype=np.int64)
    for d in range(num_digits):
        positions[d] = trajectory(rng, n_frames)
        indices[d] = rng.integers(len(images))
        digit = images[indices[d]]
        tops = (positions[d, :, 0] * (canvas_size - h)).astype(np.int32)
        lefts = (positions[d, :, 1] * (canvas_size - w)).astype(np.int32)
        for t in range(n_frames):
            patch = frames[t, tops[t]: tops[t] + h, lefts[t]: lefts[t] + w]
            np.maximum(patch, digit, out=patch)
    return frames, positions, indices


class MovingDigits(SequenceDataset):
    """Sequences generated on the fly from ``images`` (N, h, w) uint8; items as in :mod:`stcsnn.data.base`."""

    def __init__(self, name: str, split: str, images: np.ndarray, length: int, seed: int, num_digits: int,
                 canvas_size: int, input_frames: int, output_frames: int, source: str = "") -> None:
        if images.ndim != 3 or images.dtype != np.uint8 or len(images) == 0:
            raise DataError(f"{source or name}: expected uint8 images (N, h, w), found {images.dtype} "
                            f"{images.shape}")
        h, w = images.shape[1:]
        if canvas_size <= max(h, w):
            raise DataError(f"{name}: expected canvas_size > the {h}x{w} images, found {canvas_size}; "
                            "use a larger canvas_size")
        self.name, self.split, self.images, self.length = name, split, images, length
        self.seed, self.num_digits, self.canvas_size = seed, num_digits, canvas_size
        self.input_frames, self.output_frames = input_frames, output_frames
        self.frame_shape = (1, canvas_size, canvas_size)
        self.source = source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Training sequences depend on the epoch; validation and test sequences are fixed."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        epoch = self.epoch if self.split == "train" else 0
        return np.random.default_rng([self.seed, STREAMS[self.split], epoch, index])

    def frames(self, index: int) -> np.ndarray:
        n = self.input_frames + self.output_frames
        frames, _, _ = moving_sequence(self.images, self.rng(index), n, self.num_digits, self.canvas_size)
        return frames[:, None].astype(np.float32) / 255.0


class FixedSequences(SequenceDataset):
    """A fixed test set such as ``mnist_test_seq.npy``: an array (T, N, H, W) (frames first, as published),
    uint8 or float in [0, 255]; memory-mapped, scaled /255."""

    def __init__(self, name: str, split: str, path: Path, input_frames: int, output_frames: int) -> None:
        data = load_npy(path)
        if data.ndim != 4 or data.dtype.kind not in "uif":
            raise DataError(f"{path}: expected a numeric array (T, N, H, W) of frames, found {data.dtype} "
                            f"{data.shape}; is this the right file?")
        self.input_frames, self.output_frames = frame_counts(input_frames, output_frames, data.shape[0],
                                                             str(path))
        self.name, self.split, self.path, self.data = name, split, path, data
        self.frame_shape = (1, data.shape[2], data.shape[3])

    def __len__(self) -> int:
        return self.data.shape[1]

    def frames(self, index: int) -> np.ndarray:
        seq = np.asarray(self.data[: self.input_frames + self.output_frames, index], dtype=np.float32)
        ok = np.isfinite(seq).all() and seq.min() >= 0 and seq.max() <= 255
        if self.data.dtype != np.uint8 and not ok:
            raise DataError(f"{self.path}: expected finite values in [0, 255], found [{seq.min()}, "
                            f"{seq.max()}] in sequence {index}; the file is corrupt, download it again")
        return seq[:, None] / 255.0


@dataclass(frozen=True)
class MovingSources:
    """Where a moving-digits dataset finds its files (``None`` where it has none)."""

    train_images: Path | None  # IDX images for train and val
    test_images: Path | None  # IDX images for a generated test split
    fixed_test: Path | None  # a fixed (T, N, 64, 64) test array, used for 2 digits on 64x64
    hint: str  # how to get missing files


MOVING_DEFAULTS: dict[str, Any] = {"input_frames": 10, "output_frames": 10, "num_samples": 10000,
                                   "val_samples": 1000, "test_samples": 10000, "num_digits": 2,
                                   "canvas_size": 64, "seed": 0, "eval_seed": 1}


def mmnist_sources(root: str | None) -> MovingSources:
    d = resolve_root(root) / "moving_mnist"
    return MovingSources(d / "train-images-idx3-ubyte.gz", d / "t10k-images-idx3-ubyte.gz",
                         d / "mnist_test_seq.npy",
                         "run `stcsnn data prepare mmnist` or see `stcsnn data info mmnist`")


def mfmnist_sources(root: str | None) -> MovingSources:
    dirs = [resolve_root(root) / "moving_fmnist"] + ([DEBIAN_FASHION_MNIST] if root is None else [])
    train = _first([x / "train-images-idx3-ubyte.gz" for x in dirs]) or dirs[0] / "train-images-idx3-ubyte.gz"
    test = _first([x / "t10k-images-idx3-ubyte.gz" for x in dirs]) or dirs[0] / "t10k-images-idx3-ubyte.gz"
    fixed = _first([dirs[0] / "fmnist_test_seq.npy"])
    return MovingSources(train, test, fixed, "run `stcsnn data prepare mfmnist` (or `apt install "
                         "dataset-fashion-mnist`) or see `stcsnn data info mfmnist`")


def _first(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def build_moving(name: str, split: str, sources: MovingSources, images: dict[str, np.ndarray] | None = None,
                 defaults: dict[str, Any] | None = None, **options: Any) -> SequenceDataset:
    """A moving-digits split; ``images`` (``{"train": ..., "test": ...}``) replaces the IDX files."""
    check_split(split)
    opt = take_options(name, options, defaults or MOVING_DEFAULTS)
    num_digits = positive_int(opt["num_digits"], "num_digits")
    canvas = positive_int(opt["canvas_size"], "canvas_size")
    t_in, t_out = frame_counts(opt["input_frames"], opt["output_frames"], 10**9, name)
    for key in ("seed", "eval_seed"):
        positive_int(opt[key], key, minimum=0)

    def load(kind: str) -> tuple[np.ndarray, str]:
        if images is not None:
            return images[kind], f"{name} {kind} images"
        path = sources.train_images if kind == "train" else sources.test_images
        require_file(path, f"the {kind} images (IDX, e.g. {path.name})", sources.hint)
        return read_idx(path, ndim=3), str(path)

    fixed, test_images = sources.fixed_test, sources.test_images
    if split == "test" and images is None:
        standard = num_digits == 2 and canvas == 64
        if standard and fixed is not None and fixed.is_file():
            ds = FixedSequences(name, split, fixed, t_in, t_out)
            if ds.frame_shape[1:] != (canvas, canvas):
                raise DataError(f"{fixed}: expected {canvas}x{canvas} frames, found "
                                f"{ds.frame_shape[1]}x{ds.frame_shape[2]}; is this the right file?")
            return ds
        if test_images is None or not test_images.is_file():
            want = [f"the fixed test sequences {fixed} (.npy (20, N, 64, 64))"] if standard and fixed else []
            if test_images is not None or not standard:
                want.append(f"test images {test_images or 't10k-images-idx3-ubyte.gz'} (IDX) to generate "
                            f"sequences with num_digits={num_digits}, canvas_size={canvas}")
            raise DataError(f"{name} test split: expected {' or '.join(want)}, found no such file; "
                            f"{sources.hint}")
    kind = "test" if split == "test" else "train"
    imgs, source = load(kind)
    if split == "train":
        length, seed = positive_int(opt["num_samples"], "num_samples"), opt["seed"]
    else:
        length, seed = positive_int(opt[f"{split}_samples"], f"{split}_samples"), opt["eval_seed"]
    return MovingDigits(name, split, imgs, length, seed, num_digits, canvas, t_in, t_out, source)


def build_mmnist(split: str, root: str | None = None, **options: Any) -> SequenceDataset:
    """Moving MNIST, 10 -> 10 frames of 1x64x64. Train/val generated from ``moving_mnist/train-images-idx3-
    ubyte.gz``; test is the fixed ``moving_mnist/mnist_test_seq.npy`` (uint8 (20, 10000, 64, 64))."""
    return build_moving("mmnist", split, mmnist_sources(root), **options)


def build_mfmnist(split: str, root: str | None = None, **options: Any) -> SequenceDataset:
    """Moving Fashion-MNIST: train/val from ``moving_fmnist/train-images-idx3-ubyte.gz``, test generated from
    ``t10k-images-idx3-ubyte.gz`` (or OpenSTL's fixed ``fmnist_test_seq.npy`` when present). With no root
    given, the files are also looked for in /usr/share/datasets/fashion-mnist/ (Debian)."""
    return build_moving("mfmnist", split, mfmnist_sources(root), **options)


EMBEDDED_DEFAULTS: dict[str, Any] = dict(MOVING_DEFAULTS, num_samples=2000, val_samples=300, test_samples=300)


def embedded_images() -> dict[str, np.ndarray]:
    """The shipped Fashion-MNIST subset: ``{"train": (2000, 28, 28), "test": (500, 28, 28)}`` uint8."""
    arrays = load_npz(EMBEDDED_NPZ, ["train_images", "test_images"])
    return {"train": arrays["train_images"], "test": arrays["test_images"]}


def build_embedded(split: str, root: str | None = None, **options: Any) -> SequenceDataset:
    """The offline default: moving sequences (10 -> 10, 1x64x64) built from the Fashion-MNIST subset shipped
    in the package (train/val from its 2000 train images, test from its 500 test images). ``root`` is unused.
    """
    sources = MovingSources(None, None, None, "reinstall stcsnn (the subset ships with the package)")
    return build_moving("embedded", split, sources, images=embedded_images(), defaults=EMBEDDED_DEFAULTS,
                        **options)


# ------------------------------------------------------------------------------------------------ the specs
TFDS = "TensorFlow Datasets url_checksums/{}.txt"
DEBIAN = "Debian dataset-fashion-mnist copy, hashed locally"
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/")
FMNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                  "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")

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


def mfmnist_files(root: str | None) -> list[tuple[FileSpec, Path]]:
    """The Fashion-MNIST files where they were found (the Debian copy counts), else where they belong."""
    src = mfmnist_sources(root)
    return [(FMNIST_TRAIN, src.train_images), (FMNIST_TEST, src.test_images)]


def moving_frame_shape(defaults: dict[str, Any]) -> Callable[[Mapping[str, Any]], FrameShape]:
    """``frame_shape(options)`` of a moving-digits dataset: one channel on a ``canvas_size`` square."""
    def frame_shape(options: Mapping[str, Any]) -> FrameShape:
        canvas = positive_int(options.get("canvas_size", defaults["canvas_size"]), "canvas_size")
        return (1, canvas, canvas)
    return frame_shape


def describe_embedded(root: str | None) -> list[str]:
    """``stcsnn data info embedded``: the shipped file (the data root is not used)."""
    size = EMBEDDED_NPZ.stat().st_size if EMBEDDED_NPZ.is_file() else 0
    lines = [f"file     {EMBEDDED_NPZ}  {'present' if size else 'MISSING'}, {size} bytes, "
             f"sha256 {sha256_file(EMBEDDED_NPZ) if size else '-'} (shipped with the package)"]
    if size:
        lines += [f"content  {describe_content(EMBEDDED_NPZ)}",
                  "source   Fashion-MNIST, Zalando Research, MIT license (see data/embedded/README.md)"]
    return lines


register_dataset(DatasetSpec(
    "embedded", "offline default: moving Fashion-MNIST from the subset shipped in the package (10 -> 10, 1x64x64)",
    build_embedded, input_frames=EMBEDDED_DEFAULTS["input_frames"], output_frames=EMBEDDED_DEFAULTS["output_frames"],
    frame_shape=moving_frame_shape(EMBEDDED_DEFAULTS), describe_files=describe_embedded,
    local="ships with the package"))
# Reference budgets: 500 epochs for Moving MNIST (the paper); 200 for Moving Fashion-MNIST (OpenSTL's benchmark
# budget, which the paper's tables are compared against).
register_dataset(DatasetSpec(
    "mmnist", "Moving MNIST (10 -> 10, 1x64x64); test = fixed mnist_test_seq.npy", build_mmnist,
    files=files_at_root(MNIST_TRAIN, MNIST_TEST_SEQ), input_frames=MOVING_DEFAULTS["input_frames"],
    output_frames=MOVING_DEFAULTS["output_frames"], frame_shape=moving_frame_shape(MOVING_DEFAULTS),
    reference={"patch_size": 2, "gradient_detach": False, "epochs": 500}))
register_dataset(DatasetSpec(
    "mfmnist", "Moving Fashion-MNIST (10 -> 10, 1x64x64); test generated from test images", build_mfmnist,
    files=mfmnist_files, input_frames=MOVING_DEFAULTS["input_frames"], output_frames=MOVING_DEFAULTS["output_frames"],
    frame_shape=moving_frame_shape(MOVING_DEFAULTS),
    reference={"patch_size": 2, "gradient_detach": False, "epochs": 200}))
