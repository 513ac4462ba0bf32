"""TaxiBJ crowd flows (``taxibj``): OpenSTL's ``<root>/taxibj/dataset.npz``.

The archive holds ``X_train``, ``Y_train``, ``X_test``, ``Y_test``, each (N, 4, 2, 32, 32) (4 frames of inflow
and outflow on a 32x32 grid) with values in [-1, 1], mapped to [0, 1] by (x + 1) / 2 as OpenSTL does. A
sequence is X followed by Y (8 frames): inputs are its first ``input_frames`` (4), targets the next
``output_frames`` (4). Validation is the last ``val_fraction`` (default 0.1) of the training samples, in file
order (the samples are in time order, so validation comes after training in time); train is the rest.
OpenSTL's release archive has no published checksum: its download is size-checked only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stcsnn.data.base import SequenceDataset, check_split, frame_counts, resolve_root, take_options
from stcsnn.data.download import OPENSTL_RELEASE, FileSpec
from stcsnn.data.formats import check_values, load_npz, require_file
from stcsnn.data.registry import DatasetSpec, files_at_root, register_dataset
from stcsnn.errors import DataError

DEFAULTS: dict[str, Any] = {"input_frames": 4, "output_frames": 4, "val_fraction": 0.1}
FRAME_SHAPE = (2, 32, 32)  # in and out flows on OpenSTL's 32x32 grid
HINT = "run `stcsnn data prepare taxibj` or see `stcsnn data info taxibj`"


class TaxiBJ(SequenceDataset):
    """Item i: ``(inputs, targets)`` float32 (T_in, 2, 32, 32), (T_out, 2, 32, 32) in [0, 1]."""

    def __init__(self, split: str, seq: np.ndarray, input_frames: int, output_frames: int) -> None:
        self.name, self.split, self.seq = "taxibj", split, seq
        self.input_frames, self.output_frames = input_frames, output_frames
        self.frame_shape = tuple(seq.shape[2:])

    def __len__(self) -> int:
        return len(self.seq)

    def frames(self, index: int) -> np.ndarray:
        return self.seq[index, : self.input_frames + self.output_frames]


def build_taxibj(split: str, root: str | None = None, **options: Any) -> TaxiBJ:
    check_split(split)
    opt = take_options("taxibj", options, DEFAULTS)
    path = require_file(resolve_root(root) / "taxibj" / "dataset.npz", "OpenSTL's TaxiBJ archive (.npz)",
                        HINT)
    part = "test" if split == "test" else "train"
    arrays = load_npz(path, [f"X_{part}", f"Y_{part}"])
    x, y = arrays[f"X_{part}"], arrays[f"Y_{part}"]
    for key, a in ((f"X_{part}", x), (f"Y_{part}", y)):
        if a.ndim != 5 or a.dtype.kind not in "fiu" or a.shape[2] != 2:
            raise DataError(f"{path}: expected {key} as a numeric array (N, T, 2, 32, 32), found {a.dtype} "
                            f"{a.shape}; is this OpenSTL's TaxiBJ dataset.npz?")
    if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise DataError(f"{path}: expected X_{part} and Y_{part} with the same N, C, H, W, found {x.shape} "
                        f"and {y.shape}; the archive is inconsistent, download it again")
    t_in, t_out = frame_counts(opt["input_frames"], opt["output_frames"], x.shape[1] + y.shape[1], str(path))
    if split != "test":
        frac = opt["val_fraction"]
        if not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise DataError(f"taxibj: val_fraction must be a number in (0, 1), found {frac!r}")
        n_val = max(1, int(round(len(x) * frac)))
        if n_val >= len(x):
            raise DataError(f"{path}: expected more than {n_val} training samples to carve a validation "
                            f"split, found {len(x)}; use a smaller val_fraction")
        sel = slice(len(x) - n_val, None) if split == "val" else slice(0, len(x) - n_val)
        x, y = x[sel], y[sel]
    seq = np.concatenate([x, y], axis=1)
    del x, y, arrays
    check_values(seq, -1.0, 1.0, f"{path} ({part} part)", "TaxiBJ values must be in [-1, 1] (OpenSTL's "
                 "normalisation); is this the right file?", tol=1e-5)
    out = np.empty(seq.shape, np.float32)
    for start in range(0, len(seq), 256):  # (x + 1) / 2 in the file's precision, as OpenSTL, then float32
        out[start: start + 256] = np.clip((seq[start: start + 256] + 1) / 2, 0, 1)
    return TaxiBJ(split, out, t_in, t_out)


TAXIBJ_ZIP = FileSpec(
    "taxibj/taxibj_dataset.zip", (OPENSTL_RELEASE + "taxibj_dataset.zip",), extract_to="taxibj",
    provides=("taxibj/dataset.npz",), note="OpenSTL's TaxiBJ archive, unpacked to taxibj/dataset.npz")

# Reference budget: 50 epochs (OpenSTL's benchmark budget, which the paper's tables are compared against).
register_dataset(DatasetSpec(
    "taxibj", "TaxiBJ crowd flows (4 -> 4, 2x32x32), OpenSTL's dataset.npz", build_taxibj,
    files=files_at_root(TAXIBJ_ZIP), input_frames=DEFAULTS["input_frames"], output_frames=DEFAULTS["output_frames"],
    frame_shape=lambda options: FRAME_SHAPE, reference={"patch_size": 1, "gradient_detach": True, "epochs": 50}))
