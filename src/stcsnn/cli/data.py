"""``stcsnn data list | info NAME | prepare NAME``."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stcsnn.errors import DataError

if TYPE_CHECKING:
    from stcsnn.data.download import FileSpec


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, inspect (info) and download (prepare) datasets")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = actions.add_parser("list", help="the dataset names")
    q.set_defaults(func=_list)
    for name, func, text in (("info", _info, "show what was found for a dataset; non-zero exit if unusable"),
                             ("prepare", _prepare, "download and verify a dataset's files")):
        q = actions.add_parser(name, help=text, description=text)
        q.add_argument("name", metavar="NAME", help="a dataset name (see `stcsnn data list`)")
        q.add_argument("--root", default=None, help="data root (default: $STCSNN_DATA, else ./data)")
        q.set_defaults(func=func)
        if name == "info":
            q.add_argument("-O", "--option", action="append", default=[], metavar="KEY=VALUE",
                           help="a dataset option, e.g. -O path=videos.npy -O input_frames=5 (repeatable)")
            q.add_argument("--no-checksum", action="store_true", help="skip computing SHA-256 checksums")


def _list(args: argparse.Namespace) -> int:
    from stcsnn.data import list_datasets

    rows = list_datasets()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0


def parse_options(items: list[str]) -> dict[str, Any]:
    """``-O KEY=VALUE`` items -> dict, in the grammar of ``--set`` (:func:`stcsnn.config.parse_assignments`):
    values are YAML, so ``5`` is an int, ``[0.8,0.1,0.1]`` a list, ``null`` None, anything else text."""
    from stcsnn.config import parse_assignments, parse_value

    return {key: parse_value(text) for key, text in
            parse_assignments(items, "-O", example="input_frames=5").items()}


def _checksum_state(spec: FileSpec, path: Path, skip: bool) -> str:
    from stcsnn.data.download import verify

    if not spec.checksums:
        return "no published checksum"
    if skip:
        return "checksum not verified (--no-checksum)"
    match = verify(path, spec.checksums)
    if match is not None:
        return f"sha256 ok ({match.source})"
    known = ", ".join(f"{c.size} bytes" for c in spec.checksums)
    return f"sha256 DIFFERS from the published file(s) ({known}): not the published copy"


def _file_rows(name: str, root: str | None, skip_checksum: bool) -> list[str]:
    from stcsnn.data import get_dataset_spec
    from stcsnn.data.base import resolve_root
    from stcsnn.data.formats import describe_content

    rows = []
    for spec, path in get_dataset_spec(name).files(root):
        if spec.extract_to:
            base, missing = resolve_root(root), []
            for rel in spec.provides:
                p = base / rel
                if p.is_dir():
                    videos = sum(1 for v in p.iterdir() if v.is_dir())
                    rows.append(f"file     {p}  present, {videos} video folders")
                elif p.is_file():
                    rows.append(f"file     {p}  present, {p.stat().st_size} bytes, {describe_content(p)}, "
                                "no published checksum")
                else:
                    missing.append(p)
            if missing:
                where = str(missing[0]) if len(missing) == 1 else \
                    f"{missing[0].parent}/{{{','.join(p.name for p in missing)}}}"
                rows.append(f"file     {where}  MISSING ({spec.note}; `stcsnn data prepare {name}`)")
        elif path.is_file():
            rows.append(f"file     {path}  present, {path.stat().st_size} bytes, {describe_content(path)}, "
                        f"{_checksum_state(spec, path, skip_checksum)}")
        else:
            rows.append(f"file     {path}  MISSING ({spec.note}; `stcsnn data prepare {name}`)")
    return rows


def _root_errors(command):
    """``command`` with an OSError under the data root (a folder it may not read or write, a file in the way)
    turned into one DataError line naming the path."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            from stcsnn.config import quoted
            from stcsnn.data.base import resolve_root
            from stcsnn.data.registry import os_reason

            raise DataError(f"cannot use the data root {quoted(str(resolve_root(args.root)), 200)}: "
                            f"{os_reason(exc)}") from None
    return run


@_root_errors
def _info(args: argparse.Namespace) -> int:
    from stcsnn.data import SPLITS, build_dataset, get_dataset_spec, resolve_root
    from stcsnn.data.base import root_origin
    from stcsnn.data.registry import check_root

    spec = get_dataset_spec(args.name)
    if spec.files(args.root):  # its files live under the data root
        check_root(args.root)
    options = parse_options(args.option)
    print(f"dataset  {spec.name}: {spec.description}")
    if spec.describe_files is not None:
        for line in spec.describe_files(args.root):
            print(line)
    else:  # its files live under the data root
        print(f"root     {resolve_root(args.root).absolute()} ({root_origin(args.root)})")
    for row in _file_rows(spec.name, args.root, args.no_checksum):
        print(row)
    usable = True
    for split in SPLITS:
        try:
            ds = build_dataset(spec.name, split, args.root, **options)
            x, y = ds[0]
            lo, hi = min(x.min().item(), y.min().item()), max(x.max().item(), y.max().item())
            dtype = str(x.dtype).replace("torch.", "")
            print(f"split    {split:<5}  {len(ds)} sequences, inputs {tuple(x.shape)}, targets "
                  f"{tuple(y.shape)}, {dtype}, first item in [{lo:.3f}, {hi:.3f}]")
        except DataError as exc:
            usable = False
            print(f"split    {split:<5}  NOT USABLE: {exc}")
    print(f"status   {'usable' if usable else 'NOT usable as found (see above)'}")
    return 0 if usable else 1


@_root_errors
def _prepare(args: argparse.Namespace) -> int:
    from stcsnn.data import get_dataset_spec
    from stcsnn.data.base import root_origin
    from stcsnn.data.download import extract_zip
    from stcsnn.data.registry import check_root

    spec = get_dataset_spec(args.name)
    if not spec.downloadable:
        print(f"{spec.name}: nothing to download, this dataset {spec.local}")
        return 0
    root = check_root(args.root)
    print(f"root     {root.absolute()} ({root_origin(args.root)})")
    failed: list[FileSpec] = []
    bad = 0
    for fs, path in spec.files(args.root):
        if fs.extract_to and all((root / p).exists() for p in fs.provides):
            print(f"ok       {', '.join(str(root / p) for p in fs.provides)} already present")
            continue
        if not fs.extract_to and path.is_file():
            state = _checksum_state(fs, path, skip=False)
            print(f"ok       {path} already present, {state}")
            if "DIFFERS" in state:
                bad += 1
                print(f"warning  {path}: delete it and run again to download the published copy",
                      file=sys.stderr)
            continue
        dest = root / fs.path
        if fs.extract_to and dest.is_file():
            print(f"ok       {dest} already downloaded")
        elif not _fetch(fs, dest):
            failed.append(fs)
            continue
        if fs.extract_to:
            # the archive's expected top-level names: an enclosing folder of another name is stripped
            extract_zip(dest, root / fs.extract_to, tuple(Path(p).name for p in fs.provides))
            missing = [str(root / p) for p in fs.provides if not (root / p).exists()]
            if missing:
                print(f"failed   {dest}: expected {', '.join(missing)} after unpacking, found them missing; "
                      "the archive is kept, unpack it by hand", file=sys.stderr)
                failed.append(fs)
            else:
                dest.unlink()
                print(f"unpacked {dest.name} into {root / fs.extract_to}")
    if failed:
        print(f"error: could not download {len(failed)} file(s) for {spec.name}; get them by hand and put "
              "them in place:", file=sys.stderr)
        for fs in failed:
            sums = "; ".join(f"sha256 {c.sha256} ({c.size} bytes, from {c.source})" for c in fs.checksums)
            print(f"  {root / fs.path}\n      from {' or '.join(fs.urls)}\n      "
                  f"{sums or 'no published checksum'}\n      {fs.note}"
                  + (f"\n      then unzip it in {root / fs.extract_to}" if fs.extract_to else ""),
                  file=sys.stderr)
        print(f"then check with `stcsnn data info {spec.name} --root {root}`", file=sys.stderr)
        return 1
    if bad:
        print(f"error: {bad} file(s) differ from the published checksums (see above)", file=sys.stderr)
        return 1
    print(f"ready    check with `stcsnn data info {spec.name}`")
    return 0


def _fetch(fs: FileSpec, dest: Path) -> bool:
    """Download ``fs`` to ``dest`` from the first of its URLs that works; report each attempt."""
    from stcsnn.data.download import download

    for url in fs.urls:
        print(f"download {url} -> {dest}")
        try:
            download(url, dest, fs.checksums, log=lambda m: print(f"         {m}"))
        except DataError as exc:
            print(f"failed   {exc}", file=sys.stderr)
            continue
        print(f"done     {dest} ({dest.stat().st_size} bytes, "
              f"{'sha256 verified' if fs.checksums else 'no published checksum'})")
        return True
    return False
