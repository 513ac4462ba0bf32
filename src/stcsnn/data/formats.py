"""Readers for the on-disk formats, each checking what it reads: IDX (MNIST), .npy, .npz, .npy of frames.

All failures are :class:`~stcsnn.errors.DataError` naming the file, what was expected, what was found and how
to fix it.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from stcsnn.errors import DataError

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: expected {what}, found no such file; {fix}")
    return path


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """An IDX file (gzip-compressed or not, detected from its first bytes) as a read-only array.

    IDX: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian uint32 per
    dimension and the values. ``ndim`` is the expected number of dimensions (3 for image files).
    """
    path = Path(path)
    st = path.stat() if path.is_file() else None
    if st is None:
        raise DataError(f"{path}: expected an IDX file, found no such file")
    return _read_idx_cached(str(path), st.st_size, st.st_mtime_ns, ndim)


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path_str: str, size: int, mtime: int, ndim: int | None) -> np.ndarray:
    path = Path(path_str)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: expected a readable (optionally gzip-compressed) IDX file, found a corrupt "
                        f"or truncated file ({exc}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: expected an IDX file (magic 0x0000 + type code + ndim, e.g. 0x00000803 for "
                        f"images), found first bytes {raw[:4].hex() or 'none'}; this is not an IDX file")
    dtype = np.dtype(IDX_TYPES[raw[2]])
    nd = raw[3]
    if ndim is not None and nd != ndim:
        raise DataError(f"{path}: expected an IDX file with {ndim} dimensions (magic "
                        f"0x{0x800 + ndim:08x}), found {nd} (magic 0x{int.from_bytes(raw[:4], 'big'):08x}); "
                        "is this a labels file instead of an images file?")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DataError(f"{path}: expected an IDX header of {header} bytes, found {len(raw)} bytes; "
                        "the file is truncated, download it again")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(nd))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "followed by extra bytes"
        raise DataError(f"{path}: expected {expected} bytes (uncompressed) for an IDX array of shape {dims}, "
                        f"found {len(raw)}; the file is {state}, download it again")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    arr.flags.writeable = False
    return arr


def human_bytes(n: int | float) -> str:
    """A byte count in decimal units for messages: ``192 B``, ``1.2 kB``, ``8 PB``."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f}".removesuffix(".0") + f" {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _read_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the .npy stream ``f``, positioned at its data afterwards."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), bool(fortran), dtype


def check_declared(where: str, shape: tuple[int, ...], dtype: np.dtype, offset: int, size: int,
                   container: str = "the file") -> None:
    """Refuse a header whose shape x itemsize does not match the ``size`` bytes actually there (``offset``:
    the header's length), so that a corrupt or hostile header never makes a reader allocate what it claims.

    Python integers, not ``np.prod``: an int64 product of a forged shape can wrap around to a small number."""
    if dtype.hasobject:
        raise DataError(f"{where}: expected a numeric array, found dtype {dtype} (Python objects); save the "
                        "data as a numeric array")
    if any(d < 0 for d in shape) or dtype.itemsize == 0:
        raise DataError(f"{where}: expected a header with a non-negative shape and a non-empty dtype, found "
                        f"{dtype} {shape}; the file is corrupt, download or save it again")
    expected = offset + math.prod(shape) * dtype.itemsize
    if size == expected:
        return
    if size < expected:
        share = f", {size / expected:.1%} of that" if size >= expected / 1000 else ""
        state = f"truncated or corrupt ({container} holds {human_bytes(size)}{share})"
    else:
        state = f"followed by extra bytes or corrupt ({container} holds {human_bytes(size)})"
    raise DataError(f"{where}: expected {expected} bytes for a {dtype} array of shape {shape} (its header "
                    f"declares {human_bytes(expected)}), found {size} bytes; the file is {state}, download or "
                    "save it again")


def npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` of a .npy file, after checking that the file size
    matches the header (truncated copies and forged headers are refused before anything is allocated)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _read_header(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: expected a .npy file, found no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a .npy file, found a directory") from None
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: expected a .npy file with a valid header, found a corrupt or non-npy file "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); download or "
                        "save it again") from None
    check_declared(str(path), shape, dtype, offset, size)
    return shape, dtype, fortran, offset


def load_npy(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """A .npy file, size-checked against its header, memory-mapped read-only by default (no pickles)."""
    npy_header(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: expected a readable .npy file, found an unreadable one ({exc}); "
                        "download or save it again") from None


def open_frames(path: str, channels: int | None = None, what: str = "input", strict_range: bool = True
                ) -> np.ndarray:
    """The frames of a .npy, memory-mapped (nothing read yet), as (N, T, C, H, W) of a uint8 or float dtype:
    header, shape, channels and dtype checked with clear errors (see :func:`load_frames`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} file {path!r} not found (expected a .npy of frames (N, T, C, H, W))")
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DataError(f"{what} file {path!r} cannot be read: {exc.strerror or exc}") from None
    if magic.startswith(b"PK"):
        raise DataError(f"{what} file {path!r} is an .npz archive; expected a single .npy array")
    try:
        arr = load_npy(p)  # memory-mapped: only what is converted below is read
    except DataError as exc:
        raise DataError(f"{what} file {path!r} is not a readable .npy array: {exc}") from None
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5:
        raise DataError(f"{what} file {path!r} has shape {arr.shape}; expected (N, T, C, H, W) or (T, C, H, W)")
    if 0 in arr.shape:
        raise DataError(f"{what} file {path!r} has shape {arr.shape}; expected at least one sequence of at least "
                        "one frame (N, T, C, H, W all >= 1)")
    if channels is not None and arr.shape[2] != channels:
        raise DataError(f"{what} file {path!r} has {arr.shape[2]} channels (shape {arr.shape}); the model expects "
                        f"{channels}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{what} file {path!r} has dtype {arr.dtype}; expected uint8 or float"
                        + (" in [0, 1]" if strict_range else ""))
    return arr


def float_frames(arr: np.ndarray, path: str, what: str = "input", strict_range: bool = True) -> np.ndarray:
    """Frames of :func:`open_frames` (all of them or a slice) as float32: uint8 scaled to [0, 1]; float checked
    finite and (``strict_range``) in [0, 1]. ``path`` and ``what`` name the file in messages."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    with np.errstate(over="ignore"):  # a float64 value beyond float32's range becomes inf: refused below
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{what} file {path!r} contains NaN or infinite values (or values beyond float32's "
                        "range); expected finite values")
    lo, hi = float(out.min()), float(out.max())
    if strict_range and (lo < 0.0 or hi > 1.0):
        raise DataError(f"{what} file {path!r} has values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] (or uint8)")
    return out


def load_frames(path: str, channels: int | None = None, what: str = "input", strict_range: bool = True
                ) -> np.ndarray:
    """Read a .npy of frames (N, T, C, H, W) or (T, C, H, W) as float32, with clear errors.

    The header is checked against the file size before anything is read (a forged header cannot make this
    allocate petabytes). Frames (``strict_range``) must be uint8 or float in [0, 1]; a prediction
    (``strict_range=False``) may hold any finite values, since models overshoot."""
    return float_frames(open_frames(path, channels, what, strict_range), path, what, strict_range)


def _npz_error(path: Path, exc: BaseException) -> DataError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: expected an .npz (zip) archive, found a corrupt or truncated file ({reason}); "
                     "download or save it again")


# What reading a corrupt zip member can raise (zlib.error: a broken deflate stream; NotImplementedError: an
# unsupported compression method; SyntaxError: a mangled header dictionary).
ZIP_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, NotImplementedError, SyntaxError)


def npz_keys(path: str | os.PathLike[str]) -> list[str]:
    """The array names in an .npz archive (checking that it is a readable zip archive).

    Read with :mod:`zipfile`, not ``np.load``: given a .npy (not a zip) under an .npz name, ``np.load`` would
    read the whole array, whatever size its header claims."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except FileNotFoundError:
        raise DataError(f"{path}: expected an .npz archive, found no such file") from None
    except ZIP_ERRORS as exc:
        raise _npz_error(path, exc) from None


# Deflate cannot expand data more than about 1032:1; a zip directory claiming more for a member is forged.
DEFLATE_MAX_RATIO = 1032


def _npz_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of one .npy member, checked against the member's uncompressed size in the zip
    directory (and that size against what its compressed bytes can hold) before anything is read."""
    where = f"{path} (member {info.filename})"
    stored = info.compress_type == zipfile.ZIP_STORED
    deflated = info.compress_type == zipfile.ZIP_DEFLATED
    if (stored and info.file_size != info.compress_size) or (
            deflated and info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024):
        raise DataError(f"{where}: expected an uncompressed size that {human_bytes(info.compress_size)} of "
                        f"compressed data can hold, found the zip directory claiming "
                        f"{human_bytes(info.file_size)}; the archive is corrupt, download or save it again")
    with z.open(info) as f:
        shape, _, dtype = _read_header(f)
        offset = f.tell()
    check_declared(where, shape, dtype, offset, info.file_size, container="the member")
    return shape, dtype


def npz_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of the arrays in an .npz archive, read from their headers only (each
    checked against the member's size)."""
    path = Path(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    out[info.filename[:-4]] = _npz_member(z, info, path)
    except FileNotFoundError:
        raise DataError(f"{path}: expected an .npz archive, found no such file") from None
    except DataError:
        raise
    except ZIP_ERRORS as exc:
        raise _npz_error(path, exc) from None
    return out


def load_npz(path: str | os.PathLike[str], keys: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an .npz archive; a missing key, a forged header or a corrupt member is a
    DataError (headers are checked against the members' sizes before any array is allocated)."""
    path = Path(path)
    have = npz_keys(path)
    missing = [k for k in keys if k not in have]
    if missing:
        raise DataError(f"{path}: expected arrays {', '.join(keys)}, found {', '.join(have) or 'none'} "
                        f"(missing {', '.join(missing)}); is this the right file?")
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for k in keys:
                if f"{k}.npy" not in names:  # np.load would hand back the member's raw bytes
                    raise DataError(f"{path}: expected {k} as an .npy member ({k}.npy), found a member "
                                    f"{k!r} that is not an array; save the data with np.savez")
                _npz_member(z, z.getinfo(f"{k}.npy"), path)
        with np.load(path, allow_pickle=False) as z:
            for k in keys:
                out[k] = z[k]
    except DataError:
        raise
    except ZIP_ERRORS as exc:
        raise DataError(f"{path}: expected readable arrays in the .npz archive, found a corrupt member "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); download or "
                        "save it again") from None
    return out


def check_values(arr: np.ndarray, lo: float, hi: float, what: str, fix: str, tol: float = 0.0,
                 chunk: int = 256) -> tuple[float, float]:
    """Check (in chunks along axis 0) that ``arr`` is finite and within [lo - tol, hi + tol]; return
    (min, max). ``what`` names the data in messages."""
    vmin, vmax = np.inf, -np.inf
    if arr.size == 0:
        raise DataError(f"{what}: expected data, found an empty array of shape {arr.shape}")
    for start in range(0, arr.shape[0], chunk):
        block = np.asarray(arr[start: start + chunk])
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            bad = int(np.count_nonzero(~np.isfinite(block)))
            raise DataError(f"{what}: expected finite values, found {bad} NaN/infinite value(s) in entries "
                            f"{start}..{start + len(block) - 1}; clean the data (e.g. np.nan_to_num) first")
        vmin, vmax = min(vmin, float(block.min())), max(vmax, float(block.max()))
    if vmin < lo - tol or vmax > hi + tol:
        raise DataError(f"{what}: expected values in [{lo:g}, {hi:g}], found [{vmin:g}, {vmax:g}]; {fix}")
    return vmin, vmax


def describe(arr: Any) -> str:
    return f"{getattr(arr, 'dtype', type(arr).__name__)} {tuple(getattr(arr, 'shape', ()))}"


def describe_content(path: Path) -> str:
    """Shape and dtype of a data file (.npy, .npz, IDX) from its header, the error reading it, or ``""`` for
    another kind of file: what ``stcsnn data info`` shows of each file."""
    try:
        if path.name.endswith(".npy"):
            shape, dtype, _, _ = npy_header(path)
            return f"{dtype} {shape}"
        if path.name.endswith(".npz"):
            return ", ".join(f"{k} {d} {s}" for k, (s, d) in npz_shapes(path).items())
        if "idx" in path.name:
            arr = read_idx(path)
            return f"IDX {arr.dtype} {arr.shape}"
    except DataError as exc:
        return f"UNREADABLE: {exc}"
    return ""
