"""``recall``: a delay-controlled memory task in the video setting.

Each sequence shows one Fashion-MNIST garment (28x28, from the subset shipped with the package) at a random,
fixed place on a ``canvas_size`` square for ``show`` frames, then ``delay`` (D) blank frames, then the model must
predict the same garment at the same place for the ``output_frames`` frames that follow::

    frames:   [ G G ... G ][ 0 0 ... 0 ][ G G ... G ]
               show frames  D blank      output_frames (scored)
               `------- input_frames = show + D ------'

The information needed at a scored frame (what the garment is, and where) was last given D + 1 frames before the
first scored frame and nowhere since: a model without memory can at best predict the mean image; a model with
perfect memory predicts the target exactly. Evaluating one model at several D (``data_options: {delay: D}`` with
``input_frames: show + D``) measures how its recall decays with the delay.

Reproducible: train item ``i`` of epoch ``e`` is drawn from ``np.random.default_rng([seed, 0, e, i])``,
validation and test items from ``np.random.default_rng([eval_seed, 1 or 2, 0, i])``; the garment is drawn from
the subset's train images for train/val and from its test images for the test split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stcsnn.data.base import SequenceDataset, check_split, frame_counts, positive_int, take_options
from stcsnn.data.moving import STREAMS, embedded_images
from stcsnn.data.registry import DatasetSpec, FrameShape, register_dataset
from stcsnn.errors import DataError

RECALL_DEFAULTS: dict[str, Any] = {"delay": 5, "show": 2, "input_frames": 7, "output_frames": 2,
                                   "canvas_size": 32, "num_samples": 2000, "val_samples": 200,
                                   "test_samples": 200, "seed": 0, "eval_seed": 1}


def recall_sequence(image: np.ndarray, top: int, left: int, show: int, delay: int, recall: int,
                    canvas_size: int) -> np.ndarray:
    """One sequence, uint8 ``(show + delay + recall, canvas_size, canvas_size)``: ``image`` (h, w) with its
    top-left pixel at (``top``, ``left``) in the first ``show`` and the last ``recall`` frames, blank between."""
    h, w = image.shape
    frames = np.zeros((show + delay + recall, canvas_size, canvas_size), dtype=np.uint8)
    frames[:show, top:top + h, left:left + w] = image
    frames[show + delay:, top:top + h, left:left + w] = image
    return frames


class RecallSequences(SequenceDataset):
    """Recall sequences generated on the fly from ``images`` (N, 28, 28) uint8 (see the module docstring)."""

    def __init__(self, split: str, images: np.ndarray, length: int, seed: int, show: int, delay: int,
                 output_frames: int, canvas_size: int) -> None:
        h, w = images.shape[1:]
        if canvas_size < max(h, w):
            raise DataError(f"recall: expected canvas_size >= the {h}x{w} garments, found {canvas_size}")
        self.name, self.split, self.images, self.length, self.seed = "recall", split, images, length, seed
        self.show, self.delay, self.canvas_size = show, delay, canvas_size
        self.input_frames, self.output_frames = show + delay, output_frames
        self.frame_shape = (1, canvas_size, canvas_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Training sequences depend on the epoch; validation and test sequences are fixed."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def item(self, index: int) -> tuple[int, int, int]:
        """(image index, top, left) of sequence ``index``: what the model must remember."""
        epoch = self.epoch if self.split == "train" else 0
        rng = np.random.default_rng([self.seed, STREAMS[self.split], epoch, index])
        h, w = self.images.shape[1:]
        image = int(rng.integers(len(self.images)))
        return image, int(rng.integers(self.canvas_size - h + 1)), int(rng.integers(self.canvas_size - w + 1))

    def frames(self, index: int) -> np.ndarray:
        image, top, left = self.item(index)
        seq = recall_sequence(self.images[image], top, left, self.show, self.delay, self.output_frames,
                              self.canvas_size)
        return seq[:, None].astype(np.float32) / 255.0


def build_recall(split: str, root: str | None = None, **options: Any) -> SequenceDataset:
    """The recall task (``root`` is unused: the garments ship with the package)."""
    check_split(split)
    opt = take_options("recall", options, RECALL_DEFAULTS)
    show = positive_int(opt["show"], "show")
    delay = positive_int(opt["delay"], "delay", minimum=0)
    canvas = positive_int(opt["canvas_size"], "canvas_size")
    t_in, t_out = frame_counts(opt["input_frames"], opt["output_frames"], 10**9, "recall")
    if t_in != show + delay:
        raise DataError(f"recall: expected input_frames = show + delay = {show} + {delay} = {show + delay}, "
                        f"found input_frames {t_in}; set input_frames: {show + delay}")
    for key in ("seed", "eval_seed"):
        positive_int(opt[key], key, minimum=0)
    images = embedded_images()["test" if split == "test" else "train"]
    if split == "train":
        length, seed = positive_int(opt["num_samples"], "num_samples"), opt["seed"]
    else:
        length, seed = positive_int(opt[f"{split}_samples"], f"{split}_samples"), opt["eval_seed"]
    return RecallSequences(split, images, length, seed, show, delay, t_out, canvas)


def recall_frame_shape(options: Mapping[str, Any]) -> FrameShape:
    canvas = positive_int(options.get("canvas_size", RECALL_DEFAULTS["canvas_size"]), "canvas_size")
    return (1, canvas, canvas)


register_dataset(DatasetSpec(
    "recall", "memory task: a garment shown, D blank frames, then recalled in place (delay D, 1x32x32)",
    build_recall, input_frames=RECALL_DEFAULTS["input_frames"], output_frames=RECALL_DEFAULTS["output_frames"],
    frame_shape=recall_frame_shape, local="generated from the garments shipped with the package"))
