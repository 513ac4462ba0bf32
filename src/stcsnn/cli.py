"""The ``stcsnn`` command line.

Each area of the package contributes its own subcommands through an ``add_commands(subparsers)`` function
(listed in ``COMMAND_MODULES``); every handler receives the parsed ``argparse.Namespace`` and returns an exit
code. Expected failures raise :class:`stcsnn.errors.StcsnnError` and are printed as one ``error:`` line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stcsnn import __version__
from stcsnn.errors import StcsnnError

# Modules that define ``add_commands(subparsers)``; order is the order of ``stcsnn --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "stcsnn.neurons.commands",
    "stcsnn.data.commands",
    "stcsnn.train.commands",
    "stcsnn.models.commands",
    "stcsnn.perf.commands",
    "stcsnn.analysis.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stcsnn",
        description="Spatio-temporal predictive learning with spiking neural networks (STC neurons).",
    )
    parser.add_argument("--version", action="version", version=f"stcsnn {__version__}")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for PyTorch (default: PyTorch's choice; 1 is faster on a busy machine)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """The one line printed for an expected failure.

    An error raised in a DataLoader worker reaches this process re-raised by torch with the same type but the
    worker's whole traceback as its message ("Caught DataError in DataLoader worker process 0. Original
    Traceback ... stcsnn.errors.DataError: <message>"): the original message is the part after that last
    ``<type>: `` line. Any message is joined onto one line."""
    text = str(exc)
    if "DataLoader worker" in text and "Original Traceback" in text:
        kind = type(exc)
        lines = text.splitlines()
        for prefix in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
            starts = [i for i, line in enumerate(lines) if line.startswith(prefix)]
            if starts:
                lines = [lines[starts[-1]][len(prefix):], *lines[starts[-1] + 1:]]
                break
        text = "\n".join(lines)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except StcsnnError as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `stcsnn neurons | head`: the reader left, nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
