"""Run folders: what a run folder holds, which command may write into which folder, and how a run resumes.

Every command that writes into a folder another command may also write into asks this module first, before any
work: ``stcsnn train`` (:func:`resume_path`, :func:`resumed_config`, :func:`discard_unsaved`), ``stcsnn eval``
(:func:`eval_folder`), ``stcsnn export`` (:func:`export_folder_files`) and ``stcsnn import-official``
(:func:`check_import_target`). The rules:

- A run folder belongs to one run. A new run takes only a new or empty folder (a stale lock or the temporary
  files of a crash aside); ``--resume auto`` continues the folder's own ``last.pt``, or starts again a run of the
  same config that stopped before its first ``last.pt``; ``--resume PATH`` continues PATH into a new or empty
  folder or the folder PATH lies in.
- A file stcsnn did not write is never replaced: a run refuses a ``predictions.png`` or ``report.md`` that is
  not its own; ``eval`` writes next to its checkpoint only when that folder holds nothing but run files (never
  into an export folder or for a ``hf://`` model) and refuses a report of another checkpoint (reports record the
  sha256 of the checkpoint file they evaluate, :func:`file_sha256`).
- A failed new run removes what it wrote, so the folder is again one a new run or ``--resume auto`` may take.

This module sits just above :mod:`stcsnn.io` and :mod:`stcsnn.config`; the trainer, the commands and the export
import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Collection, Iterable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from stcsnn.config import Config, load_config, make_config, short
from stcsnn.errors import CheckpointError, StcsnnError
from stcsnn.io import _TEMPORARY, LOCK_NAME

__all__ = ["RESUMABLE_CHANGES", "RUN_FILES", "RunFolderError", "TrainingError", "check_import_target",
           "discard_unsaved", "eval_folder", "export_folder_files", "file_sha256", "foreign_files", "resume_path",
           "resumed_config", "run_files", "same_run"]


class TrainingError(StcsnnError):
    """The run cannot go on (non-finite loss, mismatched resume, a folder that is not this run's)."""


class RunFolderError(StcsnnError):
    """A command would write into a folder, or over a file, that is not its to write."""


# Keys that may differ between a run and its resumption (they do not change the trajectory).
RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "log_every", "val_every", "save_every_steps",
                     "max_test_batches", "num_visualize", "compile", "save_on_signal", "tensorboard",
                     # records of how the run executes (train writes them), and the opt-in re-tuning of the thread count
                     "threads", "world_size", "retune_threads"}

# The files that make a folder a run (or an import-official checkpoint): a new run never writes into a folder
# holding any of them.
RUN_FILES = ("*.pt", "report*.json", "report*.md", "metrics.csv", "steps.csv", "config.yaml")
# The run's records (not its reports): a folder holding one of these holds a training run.
_RECORDS = ("*.pt", "metrics.csv", "steps.csv", "config.yaml")
# Everything train, eval and visualize write into a run folder: any other entry is the user's.
RUN_OWNED = (*RUN_FILES, "predictions.png", "report_*_predictions.png", "visualize_grid.png",
             "visualize_sample*.gif", "tensorboard")
# What a run that died before its first last.pt leaves (`--resume auto` starts that run again), and so what a new
# run that never wrote last.pt removes again when it fails.
UNSAVED_RUN = {"config.yaml", "steps.csv", "metrics.csv", "best.pt"}
# A report's record of the checkpoint it evaluated (sha256 of the file's bytes).
SHA_KEY = "checkpoint_sha256"


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` but its lock and the temporary files of interrupted writes; [] if missing."""
    try:
        found = list(folder.iterdir())
    except OSError:
        return []
    return sorted((p for p in found if p.name != LOCK_NAME and not _TEMPORARY.fullmatch(p.name)), key=str)


def _matching(folder: Path, patterns: Iterable[str]) -> list[str]:
    patterns = tuple(patterns)
    return [p.name for p in _entries(folder) if p.is_file() and any(fnmatch(p.name, pat) for pat in patterns)]


def run_files(folder: str | os.PathLike) -> list[str]:
    """The names of the run files (``RUN_FILES``) in ``folder``, sorted; [] for a missing folder."""
    return _matching(Path(folder), RUN_FILES)


def foreign_files(folder: str | os.PathLike) -> list[str]:
    """The entries of ``folder`` that no stcsnn command writes into a run folder (the user's), sorted."""
    owned = [p.name for p in _entries(Path(folder))
             if any(fnmatch(p.name, pat) for pat in RUN_OWNED) and (p.is_file() or p.name == "tensorboard")
             and not p.is_symlink()]
    return [p.name for p in _entries(Path(folder)) if p.name not in owned]


def _listed(names: list[str], at_most: int = 6) -> str:
    return ", ".join(names[:at_most]) + (", ..." if len(names) > at_most else "")


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def report_sha(path: Path) -> str | None:
    """The checkpoint hash a report.json records; None when it records none or cannot be read."""
    try:
        if path.is_symlink() or path.stat().st_size > 1 << 20:
            return None
        value = json.loads(path.read_bytes()).get(SHA_KEY)
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------- train
def resume_path(out: Path, cfg: Config, resume: str | None) -> Path | None:
    """The checkpoint a run into ``out`` continues (None: a new run), after checking that ``out`` is this run's
    to write; :class:`TrainingError` (nothing changed) when it is not."""
    last = out / "last.pt"
    links = [p.name for p in _entries(out) if p.is_symlink()]
    if links:  # a run never writes through, nor over, a link: it may name any file of the user's
        raise TrainingError(f"{out} holds symbolic links ({_listed(links)}) where a run keeps its own files; "
                            "remove them or choose another --out (nothing was changed)")
    found = run_files(out)
    listed = _listed(found)
    unsaved = bool(found) and set(found) <= UNSAVED_RUN and "config.yaml" in found
    if resume is None:
        if last.exists():
            raise TrainingError(f"{out} already holds a run (last.pt); resume it with --resume auto or choose "
                                "another --out")
        if unsaved:
            what = "last.pt" if "best.pt" in found else "checkpoint"
            raise TrainingError(f"{out} already holds config.yaml but no {what} (a run stopped before its first "
                                "save?); restart that run with --resume auto, or choose another --out")
        others = [p.name for p in _entries(out)]  # a new run takes only a new or empty folder
        if others:
            raise TrainingError(f"{out} already holds {_listed(others)} (not a run this command wrote); choose "
                                "another --out (nothing was changed)")
        return None
    _refuse_foreign_reports(out)
    if resume == "auto":
        if last.exists():
            return last
        if not found or (unsaved and same_run(out, cfg)):
            return None  # a new run, or the same run stopped before its first last.pt: start it again
        raise TrainingError(f"{out} holds {listed} but no last.pt: there is no run of this config to resume "
                            "there; choose another --out (nothing was changed)")
    path = Path(resume)
    if found and not _inside(path, out):
        raise TrainingError(f"{out} holds another run ({listed}); continuing {path} there would overwrite it: "
                            f"choose a new --out, or --resume auto to continue {out}'s own run (nothing was "
                            "changed)")
    return path


def _refuse_foreign_reports(out: Path) -> None:
    """A resumed run rewrites report.md and predictions.png at its end: without the report.json they are written
    with, they are not this run's (a user's file of the same name), and are refused."""
    if (out / "report.json").is_file():
        return
    theirs = [name for name in ("report.md", "predictions.png") if (out / name).exists() or (out / name).is_symlink()]
    if theirs:
        raise TrainingError(f"{out} holds {', '.join(theirs)} but no report.json: not the report of a run "
                            "(the run would replace it at its end); move it or choose another --out (nothing was "
                            "changed)")


def same_run(out: Path, cfg: Config) -> bool:
    """Whether ``out``'s config.yaml describes the run ``cfg`` describes (the keys a resume may change aside)."""
    try:
        saved = load_config(out / "config.yaml").to_dict()
    except StcsnnError:
        return False
    return not changed_keys(saved, cfg.to_dict()) - RESUMABLE_CHANGES


def changed_keys(saved: dict[str, Any], now: dict[str, Any]) -> set[str]:
    """The keys whose values differ between two configs' dicts (``frame_shape`` aside: it follows the data)."""
    return {k for k, v in now.items() if k != "frame_shape" and saved.get(k) != v}


def resumed_config(out: Path, cfg: Config, saved_config: dict[str, Any], given: Collection[str] | None = None
                   ) -> Config:
    """The checkpoint's config with the changes a resume may make (``RESUMABLE_CHANGES``); others refused.

    ``given``: the keys the user set explicitly (``--set``); None: the keys where ``cfg`` differs from the
    checkpoint. A ``config.yaml`` in ``out`` edited by hand (it differs from the checkpoint's config) is refused
    unless each edited key is given: the resume would continue the checkpoint's value and rewrite the file."""
    saved, now = make_config(saved_config).to_dict(), cfg.to_dict()
    changed = changed_keys(saved, now)
    if changed - RESUMABLE_CHANGES:
        key = sorted(changed - RESUMABLE_CHANGES)[0]
        raise TrainingError(f"cannot resume {out}: its run has {key}={short(saved[key])}, the config now says "
                            f"{short(now[key])} (use another --out)")
    _check_config_edits(out, saved, changed if given is None else set(given))
    return make_config({**saved, **{k: now[k] for k in changed}})


def _check_config_edits(out: Path, saved: dict[str, Any], given: set[str]) -> None:
    path = out / "config.yaml"
    if not path.is_file():
        return
    try:
        there = load_config(path).to_dict()
    except StcsnnError as exc:
        raise TrainingError(f"cannot resume {out}: its config.yaml is not a valid config ({exc}); restore it or "
                            "remove it (the checkpoint holds the run's config; nothing was changed)") from None
    edited = sorted(k for k, v in there.items() if k != "frame_shape" and saved.get(k) != v and k not in given)
    if edited:
        shown = ", ".join(f"{k}={short(there[k])} (the checkpoint has {short(saved.get(k))})" for k in edited[:4])
        raise TrainingError(f"{path} differs from the run's checkpoint in {shown}: a resume continues the "
                            f"checkpoint's values and rewrites the file; give the keys you mean with --set (e.g. "
                            f"--set {edited[0]}={short(there[edited[0]])}) or restore config.yaml (nothing was "
                            "changed)")


def discard_unsaved(out: Path, written: Collection[str]) -> list[str]:
    """After a failure: while ``out`` holds no last.pt, remove the files of ``UNSAVED_RUN`` this command wrote
    (``written``), so that a run that never saved leaves nothing that blocks the next start. Returns their
    names."""
    if (out / "last.pt").exists():
        return []
    removed = []
    for name in sorted(set(written) & UNSAVED_RUN):
        with contextlib.suppress(OSError):
            (out / name).unlink()
            removed.append(name)
    return removed


# ---------------------------------------------------------------------------------------------- eval
def eval_folder(checkpoint: str, out: str | None, names: list[str], sha: str | None) -> Path:
    """The folder ``stcsnn eval`` writes ``names`` into, after checking that it may: the checkpoint's own folder
    when that holds only run files (else ``--out`` is required), or ``--out``, which must not hold another run.
    A report there of another checkpoint (another ``sha``) is refused, as is a report.md or PNG without its
    report.json."""
    hub = str(checkpoint).startswith("hf://")
    folder = Path(out) if out is not None else Path(checkpoint).parent
    own = not hub and Path(os.path.realpath(checkpoint)).parent == Path(os.path.realpath(folder))
    if out is None:
        if hub or Path(checkpoint).is_dir():
            what = "a Hugging Face Hub model" if hub else "an export folder"
            raise RunFolderError(f"--checkpoint {checkpoint!r} is {what}, not a run folder eval writes reports "
                                 "into; give --out FOLDER for report.json, report.md and predictions.png")
        theirs = foreign_files(folder)
        if theirs:
            raise RunFolderError(f"{folder} is not a run folder (it holds {_listed(theirs)}); give --out FOLDER "
                                 "for the report (nothing was written)")
    records = _matching(folder, _RECORDS)
    if records and not own:
        raise RunFolderError(f"--out {str(folder)!r} holds another run's files ({_listed(records)}); give a new "
                             "or empty folder, or one holding reports of this checkpoint (nothing was written)")
    for name in names:
        path = folder / name
        if path.is_symlink():
            raise RunFolderError(f"{path} is a symbolic link, not a report stcsnn wrote; remove it or give another "
                                 "--out (nothing was written)")
    if own:
        return folder
    report = folder / names[0]
    if report.exists() and (sha is None or report_sha(report) != sha):  # no sha (hf://): no report matches
        raise RunFolderError(f"{report} is the report of another checkpoint (it records no sha256 of "
                             f"{Path(checkpoint).name}); give another --out (nothing was written)")
    if not report.exists():
        theirs = [n for n in names[1:] if (folder / n).exists()]
        if theirs:
            raise RunFolderError(f"{folder} holds {', '.join(theirs)} but no {names[0]}: not a report of this "
                                 "checkpoint; give another --out (nothing was written)")
    return folder


# ---------------------------------------------------------------------------------------------- export, import
def export_folder_files(out: Path) -> list[str]:
    """The entries of an export folder beside the lock and the leftovers of an interrupted export (temporary or
    staged files); a training run's records there are refused: an export never goes into a run folder."""
    records = _matching(out, _RECORDS)
    if records:
        raise RunFolderError(f"--out {str(out)!r} holds a training run ({_listed(records)}); an export goes into a "
                             "folder of its own (nothing was changed)")
    return [p.name for p in _entries(out) if not p.name.endswith(".staged")]


def check_import_target(out: Path, force: bool) -> None:
    """``stcsnn import-official --out OUT.pt``: a new file, or with ``force`` a checkpoint file (not a symbolic
    link); never a file of a training run that is not a checkpoint's name."""
    if out.is_symlink():
        raise CheckpointError(f"--out {str(out)!r} is a symbolic link, not a checkpoint stcsnn wrote; remove it or "
                              "give another path (nothing was changed)")
    if out.exists() and not force:
        raise CheckpointError(f"--out {str(out)!r} already exists; expected a new path (or --force to replace it; "
                              "nothing was changed)")
    if out.exists() and out.suffix != ".pt":
        raise CheckpointError(f"--out {str(out)!r} exists and is not a .pt checkpoint; --force replaces only a "
                              "checkpoint (nothing was changed)")
