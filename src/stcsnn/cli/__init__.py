"""The ``stcsnn`` command line.

One module of this package per area of the library (listed in ``COMMAND_MODULES``) adds that area's subcommands
through ``add_commands(subparsers)``; every handler receives the parsed ``argparse.Namespace`` and returns an exit
code. Expected failures raise :class:`stcsnn.errors.StcsnnError` and are printed as one ``error:`` line.

Building the parser imports only these modules, and they import only the standard library (and
:mod:`stcsnn.errors`) at module level: ``stcsnn --help``, ``stcsnn COMMAND --help`` and every argparse error
answer without importing torch or numpy. A handler imports its area's implementation when it runs, and a help
text that would list registry names (datasets, neurons) points to the command that lists them instead
(the handler checks the name). ``tests/test_cli_startup.py`` holds the package to that.
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
    "stcsnn.cli.neurons",
    "stcsnn.cli.data",
    "stcsnn.cli.train",
    "stcsnn.cli.models",
    "stcsnn.cli.perf",
    "stcsnn.cli.analysis",
    "stcsnn.cli.plot",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stcsnn",
        description="Spatio-temporal predictive learning with spiking neural networks (STC neurons).",
    )
    parser.add_argument("--version", action="version", version=f"stcsnn {__version__}")
    parser.add_argument("--threads", default="auto", metavar="auto|N", help=THREADS_HELP)
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE|FILE.py",
                        help="import MODULE (on PYTHONPATH) or the Python file FILE.py first, e.g. one that "
                             "registers your own neuron (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    for leaf in _leaf_parsers(parser):  # `stcsnn train --threads 1` works as well as `stcsnn --threads 1 train`
        if leaf is not parser:
            leaf.add_argument("--threads", default=argparse.SUPPRESS, metavar="auto|N", help=THREADS_HELP)
    return parser


THREADS_HELP = ("CPU threads for PyTorch: auto (default: the CPUs this process may use minus those busy with "
                "other work, picked once at start; OMP_NUM_THREADS wins over auto) or a number; train re-tunes "
                "only with --set retune_threads=true")


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser that parses a command's own arguments (subcommands of subcommands included)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    leaves = []
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            leaves += _leaf_parsers(child)
    return leaves


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
    return shorten(" ".join(line.strip() for line in text.splitlines() if line.strip()))


#: An error line is read, not scrolled: a longer one keeps its start and its end (where the fix usually is).
MAX_LINE = 500
#: A single word longer than this (a 60,000-character value, a path) shows its start and its length.
MAX_WORD = 200


def shorten(line: str) -> str:
    """``line`` cut to a readable length: every word over MAX_WORD characters to its first 100 and its length,
    then, past MAX_LINE, the middle of the line replaced by how much was cut. A last guard: messages quote
    values shortened already (:func:`stcsnn.config.quoted`), this catches those that do not."""
    words = [w if len(w) <= MAX_WORD else f"{w[:100]}... ({len(w):,} characters)" for w in line.split(" ")]
    line = " ".join(words)
    if len(line) <= MAX_LINE:
        return line
    head, tail = MAX_LINE * 2 // 3, MAX_LINE // 4
    return f"{line[:head]} ... ({len(line) - head - tail:,} characters cut) ... {line[-tail:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        from stcsnn.neurons.registry import load_plugin
        from stcsnn.threads import set_threads

        for module in args.plugin:
            load_plugin(module)
        # printed by the commands that compute (train, bench, reproduce) when their work starts, so an input
        # error stays one line
        args.thread_choice = set_threads(args.threads)
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
