"""Downloads that are resumable, verified and atomic.

:func:`download` writes to ``<file>.part`` (resumed with an HTTP ``Range`` request when it already
exists), checks the size and SHA-256, and only then renames it to the final name, so a partial or corrupt
download never looks complete. Archives (TaxiBJ, KTH) are extracted into a temporary folder next to their
destination and moved into place.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stcsnn.errors import DataError

CHUNK = 1 << 20
#: OpenSTL's release assets (TaxiBJ, KTH archives)
OPENSTL_RELEASE = "https://github.com/chengtan9907/OpenSTL/releases/download/v0.1.0/"


@dataclass(frozen=True)
class Checksum:
    """A published SHA-256 of a file, its size in bytes, and where it was published."""

    sha256: str
    size: int
    source: str


@dataclass(frozen=True)
class FileSpec:
    """A file a dataset needs: ``path`` relative to the data root, where to download it, how to verify it.

    For an archive, ``extract_to`` is the folder (relative to the root) it is unpacked into and ``provides``
    the paths (relative to the root) that exist once it is; the archive is deleted after extraction."""

    path: str
    urls: tuple[str, ...]
    checksums: tuple[Checksum, ...] = ()
    extract_to: str | None = None
    provides: tuple[str, ...] = ()
    note: str = ""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, checksums: Sequence[Checksum]) -> Checksum | None:
    """The checksum ``path`` matches, or ``None`` (also when ``checksums`` is empty)."""
    size = path.stat().st_size
    candidates = [c for c in checksums if c.size == size]
    if not candidates:
        return None
    digest = sha256_file(path)
    return next((c for c in candidates if c.sha256 == digest), None)


def download(url: str, dest: str | os.PathLike[str], checksums: Sequence[Checksum] = (),
             timeout: float = 60.0, log: Callable[[str], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed if present); verify against ``checksums``
    (any one may match; none given: only completeness is checked); rename atomically. Returns ``dest``.

    Failures raise DataError; an interrupted download keeps ``dest.part`` for the next call to resume, a
    download that fails verification is deleted. ``url`` may be ``http(s)://`` or ``file://``."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "stcsnn"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    total = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = getattr(resp, "status", None)
            length = resp.headers.get("Content-Length")
            if have and status == 206:
                m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    part.unlink()
                    raise DataError(f"{url}: expected the download to resume at byte {have}, found the "
                                    f"server answering {resp.headers.get('Content-Range')!r}; run again to "
                                    "start over")
                total = int(m.group(2)) if m.group(2) != "*" else None
                if log:
                    log(f"resuming {dest.name} at {have} bytes")
            else:
                have = 0  # a fresh download, or the server ignored the range: start over
                total = int(length) if length and length.isdigit() else None
            with open(part, "ab" if have else "wb") as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have):  # 416 with a .part: it may already be complete; verified below
            raise DataError(f"{url}: expected {dest.name}, found HTTP error {exc.code} {exc.reason}; the "
                            "file may have moved, get it by hand (see `stcsnn data info`)") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        kept = f"; the partial download {part} is kept and the next run resumes it" if part.exists() else ""
        raise DataError(f"{url}: expected to download {dest.name}, found the download failed ({reason}){kept}"
                        ) from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise DataError(f"{url}: expected {total} bytes, found {got} after the connection ended; the partial "
                        f"download {part} is kept, run again to resume it")
    if checksums and got < min(c.size for c in checksums):
        raise DataError(f"{url}: expected {min(c.size for c in checksums)} bytes, found {got} after the "
                        f"connection ended; the partial download {part} is kept, run again to resume it")
    if checksums:
        match = verify(part, checksums)
        if match is None:
            part.unlink()
            expected = ", ".join(f"{c.sha256} ({c.size} bytes, {c.source})" for c in checksums)
            raise DataError(f"{url}: expected SHA-256 {expected}, found a {got}-byte file that matches none; "
                            "the download was deleted, run again or get the file by hand")
    os.replace(part, dest)
    return dest


def extract_zip(archive: Path, dest_dir: Path, tops: Sequence[str]) -> list[Path]:
    """Unpack ``archive`` into ``dest_dir``: extracted into a temporary folder first, a single enclosing
    folder that is not one of ``tops`` (the expected top-level names) is stripped, then each entry is moved
    into place (existing entries are kept). Returns the paths moved in."""
    tmp = dest_dir / f".{archive.name}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                    raise DataError(f"{archive}: expected relative member names, found {name!r}; refusing "
                                    "to extract this archive")
            z.extractall(tmp)
        entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        while len(entries) == 1 and entries[0].is_dir() and entries[0].name not in tops:
            entries = [p for p in entries[0].iterdir() if p.name != "__MACOSX"]
        moved = []
        for p in entries:
            target = dest_dir / p.name
            if not target.exists():
                os.replace(p, target)
                moved.append(target)
        return moved
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise DataError(f"{archive}: expected a readable zip archive, found a corrupt one ({exc}); delete it "
                        "and run `stcsnn data prepare` again") from None
    except OSError as exc:
        # the archive may be fine: a full disk or a folder we may not write is not "corrupt"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"no space left on device while unpacking {archive} into {dest_dir}; the archive "
                            "is kept: free some space (or use another --root) and run `stcsnn data prepare` "
                            "again") from None
        if exc.errno is not None and not (exc.filename and Path(exc.filename) == archive):
            raise DataError(f"cannot unpack {archive} into {dest_dir}: {exc.strerror or exc}; the archive is "
                            "kept, fix the folder and run `stcsnn data prepare` again") from None
        raise DataError(f"{archive}: expected a readable zip archive, found a corrupt one ({exc}); delete it "
                        "and run `stcsnn data prepare` again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
