"""File helpers every layer may use: atomic writes, writability checks, run-folder locks, safe loading.

This module sits at the bottom of the package (it imports only :mod:`stcsnn.errors` and :mod:`stcsnn.machine`), so
that configs, figures, models and the trainer can all write files without importing each other. Every write goes to
a temporary file in the same folder, is flushed and fsync'ed, then renamed over the target: a crash mid-write
leaves the previous file intact, and a failed write (disk full, read-only file system, no permission) is one
:class:`WriteError` line naming the file and the cause. :class:`RunLock` gives one command at a time a run folder.
Loading uses ``torch.load(..., weights_only=True)``: opening a file never runs code from it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from stcsnn.errors import CheckpointError, RunLockedError, StcsnnError
from stcsnn.machine import available_memory

try:
    import fcntl
except ImportError:  # Windows has no flock: run folders are not locked there (two commands writing into one
    fcntl = None  # folder at once go undetected); Linux, the target, and macOS have it.

LOCK_NAME = ".stcsnn.lock"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # every platform stcsnn locks on (Linux, macOS) has it
# the temporary files of _atomic_write: tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") adds 8 of these characters
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


class WriteError(StcsnnError):
    """A file could not be written (disk full, read-only file system, no permission). The previous file, if any,
    is unchanged; ``errno`` is the operating system's error number where one is known."""

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.errno = error_number


class _RecordingFile:
    """Passes writes through and keeps the OSError of a failed one: torch.save reports a failed write as a bare
    ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ...``, the cause lost."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None
        # anything else raised inside write(): a signal handler's exception (a second Ctrl-C, SIGTERM), which
        # torch.save would otherwise turn into the same bare RuntimeError as a full disk
        self.interrupt: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        except BaseException as exc:
            self.interrupt = exc
            raise

    def flush(self) -> None:
        self._f.flush()


def _write_failure(exc: BaseException, recorded: OSError | None, folder: Path) -> tuple[str, int | None] | None:
    """The cause of a failed write in words (and its errno), or None when ``exc`` is no write failure (a bug, an
    interrupt: re-raised as it is)."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc), exc.errno
    if not isinstance(exc, RuntimeError):
        return None
    if recorded is not None:
        return recorded.strerror or str(recorded), recorded.errno
    text = " ".join(str(exc).split())
    if "inline_container" not in text and "PytorchStreamWriter" not in text:
        return None
    with contextlib.suppress(OSError):
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < 1 << 20:  # torch lost the errno; a (nearly) full disk is the usual reason
            return os.strerror(errno.ENOSPC), errno.ENOSPC
    return text[:200], None


def _fsync_dir(folder: Path) -> None:
    try:  # make a rename durable; not every platform or file system can open a folder
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def refuse_symlink(path: Path) -> None:
    """A symbolic link where stcsnn is about to write a file of its own is refused: replacing it would hide the
    user's link, and following it would write into whatever file it names."""
    if path.is_symlink():
        raise WriteError(f"cannot write {path}: it is a symbolic link (to {os.readlink(path)!r}), not a file "
                         "stcsnn wrote; remove it or choose another folder (nothing was changed)")


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], Any]) -> None:
    path = Path(path)
    refuse_symlink(path)
    existed = path.exists()
    tmp = None
    recorder = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the result the usual permissions
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if recorder is not None and recorder.interrupt is not None and exc is not recorder.interrupt:
            raise recorder.interrupt from None  # the interrupt, not torch's RuntimeError about it
        cause = _write_failure(exc, recorder.error if recorder else None, path.parent)
        if cause is None:
            raise
        kept = "the previous file is unchanged" if existed else "nothing was written"
        raise WriteError(f"cannot write {path}: {cause[0]}; {kept}", cause[1]) from None
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created, outermost first."""
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink() and p.parent != p:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # made by someone else meanwhile: theirs, not ours to remove
                if not d.is_dir():
                    raise
                continue
            created.append(d)
    except OSError:
        _remove_empty_dirs(created)
        raise
    return created


def _remove_empty_dirs(created: list[Path]) -> None:
    """Remove the folders of ``created`` (outermost first) that are still empty, innermost first."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:  # not empty (or gone): it, and so its parents, stay
            break


def check_writable(path: str | os.PathLike) -> None:
    """Fail early (before hours of work) when ``path``'s folder cannot be created or written. The folders made
    for the check are removed again (the first real write makes them): a failed command leaves no empty folder."""
    folder = Path(path).parent
    created: list[Path] = []
    try:
        created = _make_dirs(folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CheckpointError(f"cannot write to {str(folder)!r}: {exc.strerror or exc}") from None
    finally:
        _remove_empty_dirs(created)


class RunLock:
    """``with RunLock(folder, "stcsnn train"):`` -- the folder belongs to this command until the block ends.

    A non-blocking ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``folder/.stcsnn.lock``, a file that holds the holder's
    PID and command so that a refused command can say who is using the folder (:class:`RunLockedError`). The
    kernel drops the lock when its process ends, SIGKILL included, so a lock file left behind never blocks
    anyone. Creates ``folder`` if needed; on exit (exceptions included) removes the lock file, and the folders
    it created if they are still empty: a command that failed before writing anything leaves nothing behind.
    """

    def __init__(self, folder: str | os.PathLike, command: str) -> None:
        self.folder = Path(folder)
        self.command = command
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"RunLock on {self.folder} entered twice")
        try:
            self._created = _make_dirs(self.folder)
        except OSError as exc:
            raise CheckpointError(f"cannot create the folder {str(self.folder)!r}: {exc.strerror or exc}") from None
        try:
            self._fd = self._acquire()
        except BaseException:
            _remove_empty_dirs(self._created)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlink_if_same(self.path, fd)
            os.close(fd)
        _remove_empty_dirs(self._created)

    def _acquire(self) -> int:
        while True:
            try:
                # ONOFOLLOW: a symbolic link named .stcsnn.lock is refused, never followed (we truncate the file)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP or self.path.is_symlink():
                    raise CheckpointError(f"{self.path} is a symbolic link, not the lock file stcsnn makes; remove "
                                          "it or choose another folder (nothing was changed)") from None
                if not stat.S_ISREG(_lstat_mode(self.path)):
                    raise CheckpointError(f"{self.path} is not a file (a folder?); remove it or choose another "
                                          "folder (nothing was changed)") from None
                raise CheckpointError(f"cannot write to {str(self.folder)!r}: {exc.strerror or exc}") from None
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    # a file system without locks (ENOLCK): run unlocked rather than refuse to run at all
                    print(f"note: cannot lock {self.folder} ({exc.strerror}); a second command writing into it "
                          "at the same time would go undetected", file=sys.stderr)
                    break
                pid, command = _lock_holder(fd)
                os.close(fd)
                who = f"`{command}` (PID {pid})" if pid else "another process"
                raise RunLockedError(f"{self.folder} is in use by {who}; wait for it to finish or use another "
                                     "--out") from None
            # the previous holder may have removed the file between our open and flock: we must hold the one
            # that is there now, else two commands could each hold a lock on a different file
            try:
                here, there = os.fstat(fd), os.lstat(self.path)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{self.command}\n".encode())
        except OSError as exc:  # a full disk: the run could not write its first file either; say so now
            _unlink_if_same(self.path, fd)
            os.close(fd)
            raise WriteError(f"cannot write {self.path}: {exc.strerror or exc}; nothing was written",
                             exc.errno) from None
        return fd


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return stat.S_IFREG


def _unlink_if_same(path: Path, fd: int) -> None:
    """Remove ``path`` only while it is still the file ``fd`` holds open: never another process's lock file, nor
    anything put in its place meanwhile."""
    with contextlib.suppress(OSError):
        here, there = os.fstat(fd), os.lstat(path)
        if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
            os.unlink(path)


def _lock_holder(fd: int) -> tuple[int | None, str]:
    """(PID, command) written by the holder of the lock file ``fd``; (None, "") when it has not written yet."""
    try:
        lines = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
    except OSError:
        return None, ""
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    return pid, (lines[1].strip() if len(lines) > 1 else "") or "an stcsnn command"


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files (``.NAME.XXXXXXXX.tmp``) that interrupted atomic writes (SIGKILL, power loss)
    left in ``folder``; returns their names. Call it only while holding the folder's :class:`RunLock`: the
    temporary file of a live writer looks the same."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    for p in entries:
        if _TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p.name)
    return sorted(removed)


#: torch's words for a pickle that names a global weights_only loading refuses: "Unsupported global: GLOBAL x.y
#: was not an allowed global" for a class it does not know, "unsupported GLOBAL posix.system whose module posix is
#: blocked" (torch 2.13) for modules such as os and subprocess
_UNSUPPORTED_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)


def load_reason(exc: Exception) -> str:
    """The informative part of torch.load's (long, multi-line) error message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    unsupported = _UNSUPPORTED_GLOBAL.search(text)
    if unsupported:
        return f"it holds a Python object that weights_only loading refuses (GLOBAL {unsupported.group(1)})"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0][:200]


def safe_load(path: str | os.PathLike, what: str, hint: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (never runs code from the file), with one clear error
    line for a missing, truncated, foreign or oversized file: ``{what} 'path' ... ({hint})``.

    A zip archive (torch.save's format) is memory-mapped: only the bytes the file really holds are ever read, so
    no size declared inside it can make torch allocate more. Anything else (torch's legacy format, or not a torch
    file at all) is read whole, after checking its size against the memory available: a 20 GB file, sparse or
    not, is one line rather than an exhausted machine."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} not found")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise CheckpointError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    free = available_memory()
    if not zipped and free is not None and size > free:
        raise CheckpointError(f"{what} {str(path)!r} is {size} bytes, more than the {free} bytes of memory "
                              f"available, and not a zip archive as torch.save writes them ({hint})")
    try:
        if zipped:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle holding code or foreign classes, not a torch file
        reason = load_reason(exc)
        # a pickle naming os.system is no truncated checkpoint: the hint would mislead there
        why = "; refused before anything in it ran" if _UNSUPPORTED_GLOBAL.search(str(exc)) else f" ({hint})"
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read with weights_only=True ({size} bytes): {reason}{why}"
        ) from None
