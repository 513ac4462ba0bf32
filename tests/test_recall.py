"""The ``recall`` memory task: blank frames are blank, the target is the shown garment in its place."""

from __future__ import annotations

import numpy as np
import pytest

from stcsnn.data import build_dataset, get_dataset_spec
from stcsnn.data.moving import embedded_images
from stcsnn.errors import DataError

OPTS = {"num_samples": 6, "val_samples": 3, "test_samples": 3, "canvas_size": 32}


@pytest.mark.parametrize("delay", [0, 3, 10])
@pytest.mark.parametrize("split", ["train", "test"])
def test_blank_frames_are_blank_and_the_target_is_the_shown_garment(split, delay):
    show, recall = 2, 3
    ds = build_dataset("recall", split, delay=delay, show=show, input_frames=show + delay, output_frames=recall,
                       **OPTS)
    images = embedded_images()["test" if split == "test" else "train"]
    for i in range(len(ds)):
        inputs, targets = (x.numpy() for x in ds[i])
        assert inputs.shape == (show + delay, 1, 32, 32) and targets.shape == (recall, 1, 32, 32)
        image, top, left = ds.item(i)
        garment = images[image].astype(np.float32) / 255.0
        expected = np.zeros((32, 32), np.float32)
        expected[top:top + 28, left:left + 28] = garment
        for t in range(show):
            np.testing.assert_array_equal(inputs[t, 0], expected)
        for t in range(show, show + delay):
            assert not inputs[t].any(), f"frame {t} of the delay is not blank"
        for t in range(recall):
            np.testing.assert_array_equal(targets[t, 0], expected)  # what and where, exactly
        assert garment.sum() > 0  # a garment, not an empty image


def test_sequences_are_reproducible_and_differ_between_items_and_training_epochs():
    a = build_dataset("recall", "train", **OPTS)
    b = build_dataset("recall", "train", **OPTS)
    np.testing.assert_array_equal(a.frames(1), b.frames(1))
    assert a.item(0) != a.item(1)
    before = a.item(0)
    a.set_epoch(1)
    assert a.item(0) != before
    val = build_dataset("recall", "val", **OPTS)
    fixed = val.item(0)
    val.set_epoch(3)
    assert val.item(0) == fixed  # evaluation sequences do not move with the epoch


def test_input_frames_must_be_show_plus_delay():
    with pytest.raises(DataError, match=r"expected input_frames = show \+ delay = 2 \+ 20 = 22, found "
                                        r"input_frames 7; set input_frames: 22"):
        build_dataset("recall", "train", delay=20, **OPTS)


def test_the_spec_declares_the_frames_and_shape():
    spec = get_dataset_spec("recall")
    assert (spec.input_frames, spec.output_frames) == (7, 2)
    assert spec.frame_shape({"canvas_size": 40}) == (1, 40, 40)
    assert build_dataset("recall", "val").frame_shape == (1, 32, 32)
