"""Datasets by name: the registry mechanics.

Each dataset is one file (``moving.py``: embedded, mmnist, mfmnist; ``taxibj.py``; ``kth.py``; ``arrays.py``:
npy) that declares its :class:`DatasetSpec` beside its loader and registers it with :func:`register_dataset`;
``stcsnn.data`` imports those files, so the registry is complete whenever any part of ``stcsnn.data`` is.
Everything else (model building, ``stcsnn data info/prepare``, ``scripts/make_configs.py``) reads the specs and
never branches on a dataset's name.
"""

from __future__ import annotations

import difflib
import errno
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stcsnn.config import check_path, quoted
from stcsnn.data.base import SequenceDataset, check_split, resolve_root
from stcsnn.data.download import FileSpec
from stcsnn.errors import DataError

FrameShape = tuple[int, int, int]


def no_files(root: str | None) -> list[tuple[FileSpec, Path]]:
    """The files of a dataset that reads none under the data root."""
    return []


def shape_unknown(options: Mapping[str, Any]) -> FrameShape | None:
    """The frame shape of a dataset whose shape only its data tells."""
    return None


def files_at_root(*specs: FileSpec) -> Callable[[str | None], list[tuple[FileSpec, Path]]]:
    """``files`` for a dataset whose files lie at fixed paths under the data root."""
    return lambda root: [(s, resolve_root(root) / s.path) for s in specs]


@dataclass(frozen=True)
class DatasetSpec:
    """What the package knows of a dataset without reading its data.

    - ``build(split, root, **options)``: the dataset (see :func:`build_dataset`).
    - ``files(root)``: ``(FileSpec, path)`` per file it reads under the data root, with the path where the file
      was found or, when missing, where it belongs; the FileSpecs carry the downloads and published checksums.
    - ``input_frames``, ``output_frames``: the default frame split (``None``: taken from the data).
    - ``frame_shape(options)``: (C, H, W) of its frames for these dataset options, ``None`` when unknown
      without the data.
    - ``describe_files(root)``: ``stcsnn data info`` lines saying where its files come from (``None``: the
      files live under the data root, and the root is shown).
    - ``local``: why there is nothing to download (the data ships with the package or is the user's own);
      empty for datasets that ``stcsnn data prepare`` downloads.
    - ``reference``: the reference hyper-parameters of ``configs/<name>/reference.yaml`` beyond the frames
      (``patch_size``, ``gradient_detach``, ``epochs``); empty: no reference configs.
    """

    name: str
    description: str
    build: Callable[..., SequenceDataset]
    files: Callable[[str | None], list[tuple[FileSpec, Path]]] = no_files
    input_frames: int | None = None
    output_frames: int | None = None
    frame_shape: Callable[[Mapping[str, Any]], FrameShape | None] = shape_unknown
    describe_files: Callable[[str | None], list[str]] | None = None
    local: str = ""
    reference: Mapping[str, Any] = field(default_factory=dict)

    @property
    def downloadable(self) -> bool:
        return not self.local


#: name -> spec, in registration order (the order of ``stcsnn data list``).
DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` under ``spec.name``; a name registered twice is an error (two files claiming one name)."""
    if spec.name in DATASETS:
        raise DataError(f"dataset {spec.name!r} is registered twice: expected one spec per name, found a second "
                        f"one ({spec.description!r})")
    DATASETS[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        hint = difflib.get_close_matches(str(name)[:100], DATASETS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise DataError(f"unknown dataset {quoted(name)}{did_you_mean}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def list_datasets() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]``."""
    return [(s.name, s.description) for s in DATASETS.values()]


def os_reason(exc: OSError) -> str:
    """What an OSError found, in words: ``permission denied (/data/x)``, ``a symbolic link loop (/data)``."""
    words = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
             errno.ELOOP: "a symbolic link loop", errno.ENOTDIR: "a file where a folder belongs",
             errno.EEXIST: "a file or broken link where a folder belongs", errno.ENAMETOOLONG: "a name too long"}
    what = words.get(exc.errno, exc.strerror or type(exc).__name__)
    if exc.errno == errno.EEXIST and exc.filename and os.path.islink(exc.filename):
        what = "a symbolic link that leads nowhere (a loop or a missing target) where a folder belongs"
    return f"{what} ({quoted(os.fsdecode(exc.filename), 200)})" if exc.filename else what


def check_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root (:func:`resolve_root`) if it can hold a dataset: a folder this process may read and enter,
    or not there yet (``stcsnn data prepare`` creates it). A file, a symbolic link loop, a path through a file or
    an unreadable folder is a DataError naming the root, before anything reads or creates under it."""
    path = resolve_root(root)
    check_path(path, "the data root")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):  # a link to nowhere: creating the root would fail on the link
            raise DataError(f"data root {quoted(str(path), 200)}: expected a folder, found a symbolic link to "
                            f"{quoted(os.readlink(path), 200)}, which does not exist") from None
        return path
    except OSError as exc:
        raise DataError(f"data root {quoted(str(path), 200)}: expected a folder, found {os_reason(exc)}"
                        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"data root {quoted(str(path), 200)}: expected a folder, found a file")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"data root {quoted(str(path), 200)}: expected a folder this user may read, found "
                        "permission denied")
    return path


def build_dataset(name: str, split: str, root: str | None = None, **options: Any) -> SequenceDataset:
    """The ``split`` ("train", "val" or "test") of dataset ``name``. Items are ``(inputs, targets)``, float32
    (T_in, C, H, W) and (T_out, C, H, W) in [0, 1]. ``root``: the data root (default ``$STCSNN_DATA`` or
    ``./data``); ``options``: the dataset's options (``input_frames``, ``output_frames``, ...).

    A file the dataset cannot open (permission denied, a symbolic link loop, ...) is a DataError."""
    spec = get_dataset_spec(name)
    check_split(split)
    if spec.files(None if root is None else str(root)):  # it reads files under the data root
        check_root(root)
    try:
        return spec.build(split, None if root is None else str(root), **options)
    except OSError as exc:
        raise DataError(f"the {name!r} {split} split cannot be read: {os_reason(exc)}") from None
