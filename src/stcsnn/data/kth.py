"""KTH human actions (``kth``): OpenSTL's frame folders ``<root>/kth/<action>/<personXX_action_dY_uncomp>/
image_NNNN.jpg`` for the 6 actions.

Persons 01-16 are OpenSTL's training persons and 17-25 its test persons; stcsnn keeps person 16 (option
``val_persons``) out of training as the validation split, so train is persons 01-15. Sequences are 30
contiguous frames (10 in, 20 out) taken as OpenSTL does: scanning each video backwards from its last frame,
windows do not overlap for boxing, handclapping, handwaving and walking, and start every 3 frames for jogging
and running. A frame is the first channel of the JPEG, resized to 128x128 with bilinear interpolation at pixel
centres (as OpenCV's ``cv2.resize`` does for OpenSTL), then /255. Frames are decoded when an item is read
(nothing is held in memory but the file list). Pillow is needed for JPEG decoding. OpenSTL's release archive has
no published checksum: its download is size-checked only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
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
from stcsnn.data.download import OPENSTL_RELEASE, FileSpec
from stcsnn.data.registry import DatasetSpec, FrameShape, files_at_root, register_dataset
from stcsnn.errors import DataError

NON_OVERLAPPING = ("boxing", "handclapping", "handwaving", "walking")
STRIDE_3 = ("jogging", "running")
ACTIONS = NON_OVERLAPPING + STRIDE_3
TRAIN_PERSONS = tuple(f"{i:02d}" for i in range(1, 17))
TEST_PERSONS = tuple(f"{i:02d}" for i in range(17, 26))
DEFAULTS: dict[str, Any] = {"input_frames": 10, "output_frames": 20, "image_size": 128,
                            "val_persons": ("16",)}
HINT = "run `stcsnn data prepare kth` or see `stcsnn data info kth`"
VIDEO_RE = re.compile(r"^person(\d\d)_")
FRAME_RE = re.compile(r"^image_(\d+)\.jpe?g$", re.IGNORECASE)


def resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float32 -> (size, size), bilinear at pixel centres with edge clamping (cv2.INTER_LINEAR)."""
    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(size) + 0.5) * (n_in / size) - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)
    y0, y1, wy = axis(img.shape[0])
    x0, x1, wx = axis(img.shape[1])
    rows = img[y0] * (1 - wy)[:, None] + img[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


# KTH frames are 160x120; anything beyond this many pixels is a corrupt or hostile header, refused before
# decoding (Pillow's own bomb limit is ~89 M pixels, a warning only below twice that).
MAX_FRAME_PIXELS = 8192 * 8192


def read_frame(path: Path, size: int) -> np.ndarray:
    """One frame as float32 (size, size) in [0, 1]."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("kth: reading JPEG frames needs Pillow, found it missing; run `pip install pillow`"
                        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(path) as im:  # lazy: reads the header only
                w, h = im.size
                if w * h > MAX_FRAME_PIXELS or w < 1 or h < 1:
                    raise DataError(f"{path}: expected a video frame (KTH's are 160x120), found a header "
                                    f"declaring {w}x{h} pixels; the file is corrupt, replace the frame folder "
                                    "with a good copy")
                im.load()
                arr = np.asarray(im)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError is an OSError; DecompressionBombError: Pillow's own refusal at open
        raise DataError(f"{path}: expected a readable JPEG frame, found a corrupt or truncated file "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); replace the frame "
                        "folder with a good copy") from None
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit grayscale or RGB image, found {arr.dtype} {arr.shape}")
    return resize_bilinear(arr.astype(np.float32), size) / 255.0


def sequence_starts(numbers: list[int], length: int, stride3: bool) -> list[int]:
    """Start positions (into ``numbers``, the sorted frame numbers of one video) of OpenSTL's sequences:
    scanning backwards from the last frame, a window of ``length`` consecutive frame numbers is taken, then
    the scan moves ``length`` frames back (non-overlapping) or 3 frames back (jogging, running)."""
    starts, i = [], len(numbers) - 1
    while i >= length - 1:
        if numbers[i] - numbers[i - length + 1] == length - 1:
            starts.append(i - length + 1)
            i -= 2 if stride3 else length - 1
        i -= 1
    return starts[::-1]


class KTH(SequenceDataset):
    """Item i: ``(inputs, targets)`` float32 (T_in, 1, S, S), (T_out, 1, S, S) in [0, 1], S = image_size."""

    def __init__(self, split: str, sequences: list[list[Path]], input_frames: int, output_frames: int,
                 image_size: int) -> None:
        self.name, self.split, self.sequences = "kth", split, sequences
        self.input_frames, self.output_frames, self.image_size = input_frames, output_frames, image_size
        self.frame_shape = (1, image_size, image_size)

    def __len__(self) -> int:
        return len(self.sequences)

    def frames(self, index: int) -> np.ndarray:
        return np.stack([read_frame(p, self.image_size) for p in self.sequences[index]])[:, None]


def scan_videos(base: Path) -> dict[str, dict[str, list[tuple[int, Path]]]]:
    """``{action: {video_dir_name: [(frame_number, path), ...] sorted}}`` for the folders found."""
    out: dict[str, dict[str, list[tuple[int, Path]]]] = {}
    for action in ACTIONS:
        adir = base / action
        if not adir.is_dir():
            continue
        out[action] = {}
        for vdir in sorted(p for p in adir.iterdir() if p.is_dir() and VIDEO_RE.match(p.name)):
            frames = sorted((int(m.group(1)), f) for f in vdir.iterdir() if (m := FRAME_RE.match(f.name)))
            out[action][vdir.name] = frames
    return out


def build_kth(split: str, root: str | None = None, **options: Any) -> KTH:
    check_split(split)
    opt = take_options("kth", options, DEFAULTS)
    size = positive_int(opt["image_size"], "image_size")
    t_in, t_out = frame_counts(opt["input_frames"], opt["output_frames"], 10**9, "kth")
    val = opt["val_persons"]
    val = tuple(f"{int(v):02d}" if str(v).isdigit() else str(v)
                for v in ((val,) if isinstance(val, (str, int)) else val))
    if not set(val) <= set(TRAIN_PERSONS) or set(val) == set(TRAIN_PERSONS):
        raise DataError(f"kth: val_persons must be some (not all) of the training persons 01-16, "
                        f"found {val!r}")
    persons = {"train": set(TRAIN_PERSONS) - set(val), "val": set(val), "test": set(TEST_PERSONS)}[split]
    base = resolve_root(root) / "kth"
    videos = scan_videos(base)
    if not videos:
        raise DataError(f"{base}: expected OpenSTL's KTH frame folders <action>/<personXX_action_dY_uncomp>/"
                        f"image_NNNN.jpg for actions {', '.join(ACTIONS)}, found none; {HINT}")
    length = t_in + t_out
    sequences, longest = [], 0
    for action, vids in videos.items():
        for vname, frames in vids.items():
            if VIDEO_RE.match(vname).group(1) not in persons:
                continue
            numbers = [n for n, _ in frames]
            longest = max(longest, len(numbers))
            for s in sequence_starts(numbers, length, action in STRIDE_3):
                sequences.append([p for _, p in frames[s: s + length]])
    if not sequences:
        raise DataError(f"{base}: expected videos of persons {', '.join(sorted(persons))} with at least "
                        f"{length} consecutive frames (input_frames + output_frames) for the {split} split, "
                        f"found {'no such videos' if longest == 0 else f'at most {longest} frames'}; "
                        f"check the folder layout or lower input_frames/output_frames")
    return KTH(split, sequences, t_in, t_out, size)


KTH_ZIP = FileSpec(
    "kth/kth_action.zip", (OPENSTL_RELEASE + "kth_action.zip",), extract_to="kth",
    provides=tuple(f"kth/{a}" for a in ACTIONS),
    note="OpenSTL's KTH frames, unpacked to kth/<action>/<personXX_action_dY_uncomp>/image_NNNN.jpg; or the "
         "original videos from https://www.csc.kth.se/cvap/actions/ converted to such frames (e.g. "
         "`ffmpeg -i person01_boxing_d1_uncomp.avi image_%04d.jpg`)")


def kth_frame_shape(options: Mapping[str, Any]) -> FrameShape:
    """One channel, resized to ``image_size`` squares."""
    size = positive_int(options.get("image_size", DEFAULTS["image_size"]), "image_size")
    return (1, size, size)


# Reference budget: 100 epochs (OpenSTL's benchmark budget, which the paper's tables are compared against).
register_dataset(DatasetSpec(
    "kth", "KTH human actions (10 -> 20, 1x128x128), OpenSTL's frame folders", build_kth,
    files=files_at_root(KTH_ZIP), input_frames=DEFAULTS["input_frames"], output_frames=DEFAULTS["output_frames"],
    frame_shape=kth_frame_shape, reference={"patch_size": 4, "gradient_detach": True, "epochs": 100}))
