"""``stcsnn --help``, ``stcsnn COMMAND --help`` and argparse's errors answer without importing torch or numpy.

Each case runs in a fresh interpreter (this one has torch loaded already): the command line is parsed by
``stcsnn.cli.main`` and, once argparse has answered, the probe reports the exit status and which of the heavy
modules ``sys.modules`` holds. Nothing here is timed (``benchmarks/cli_startup.py`` measures).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import one_error

from stcsnn.cli import main

HEAVY = ("torch", "numpy")

# argv as JSON in sys.argv[1]; the report is the last line of stdout
PROBE = f"""
import json, sys
from stcsnn.cli import main
try:
    rc = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    rc = exc.code
sys.stdout.flush()
print("PROBE " + json.dumps({{"rc": rc, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def probe(argv: list[str], cwd) -> tuple[dict, str, str]:
    """``main(argv)`` in a fresh interpreter: (report, stdout without the report, stderr)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    *out, last = proc.stdout.splitlines()
    assert proc.returncode == 0 and last.startswith("PROBE "), (proc.stdout, proc.stderr)
    return json.loads(last[len("PROBE "):]), "\n".join(out), proc.stderr


@pytest.mark.parametrize(("argv", "rc", "stream", "expected"), [
    (["--help"], 0, "out", "usage: stcsnn [-h]"),
    ([], 0, "out", "usage: stcsnn [-h]"),  # no command: the help
    (["train", "--help"], 0, "out", "usage: stcsnn train [-h]"),
    (["reproduce", "--help"], 0, "out", "usage: stcsnn reproduce [-h]"),
    (["train", "--bogus"], 2, "err", "stcsnn: error: unrecognized arguments: --bogus"),
    (["nosuch"], 2, "err", "stcsnn: error: argument COMMAND: invalid choice: 'nosuch'"),
    (["eval", "--checkpoint", "x.pt", "--split", "nope"], 2, "err",
     "stcsnn eval: error: argument --split: invalid choice: 'nope' (choose from 'train', 'val', 'test')"),
    (["reproduce", "--scale", "huge"], 2, "err", "stcsnn reproduce: error: argument --scale: invalid choice: 'huge'"),
    (["eval"], 2, "err", "stcsnn eval: error: the following arguments are required: --checkpoint"),
    (["data", "info"], 2, "err", "stcsnn data info: error: the following arguments are required: NAME"),
    (["demo", "--steps", "0"], 2, "err", "expected a whole number of steps from 1 to 1000, got '0'"),
])
def test_help_and_argument_errors_import_no_torch(argv, rc, stream, expected, tmp_path):
    report, out, err = probe(argv, tmp_path)
    assert report == {"rc": rc, "heavy": []}, (report, out, err)
    assert expected in (out if stream == "out" else err), (out, err)
    if rc == 2:  # argparse's answer: the usage line, then the one error line, nothing on stdout
        assert out == "" and err.startswith("usage: ") and err.rstrip().splitlines()[-1].startswith("stcsnn")


def test_every_command_help_imports_no_torch(tmp_path):
    """``--help`` of every command and subcommand (``data info``, ``analyze gradients``, ...), all in one
    interpreter: the help of each is printed and none imported torch or numpy."""
    code = PROBE.replace("rc = main(json.loads(sys.argv[1]))", """import argparse
    from stcsnn.cli import build_parser

    def paths(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        yield prefix
        for action in subs:
            for name, child in action.choices.items():
                yield from paths(child, prefix + [name])

    rc = []
    for path in paths(build_parser(), []):
        try:
            main(path + ["--help"])
        except SystemExit as exc:
            rc.append([path, exc.code])""")
    proc = subprocess.run([sys.executable, "-c", code, "[]"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1][len("PROBE "):])
    assert report["heavy"] == []
    names = [" ".join(path) for path, _ in report["rc"]]
    assert {"", "train", "bench", "data info", "data prepare", "analyze gradients", "analyze dynamics",
            "export", "plot", "energy", "reproduce", "neurons", "demo"} <= set(names)
    assert all(code == 0 for _, code in report["rc"])
    assert proc.stdout.count("usage: stcsnn") == len(names)


def test_python_m_stcsnn_help_imports_no_torch(tmp_path):
    """The real entry point (``python -m stcsnn``), watched by the interpreter itself: ``-X importtime`` lists
    on stderr every module an ``import`` statement loads (``importlib.import_module``'s are not listed: the
    command modules are, through their own ``import`` statements, as torch would be)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "stcsnn", "data", "info", "--help"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "usage: stcsnn data info" in proc.stdout, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"stcsnn.cli", "stcsnn.cli.analyze"} <= imported  # the listing is real
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_dataset_name_is_checked_by_the_handler(capsys, tmp_path):
    """The help no longer lists the datasets (that would import the registry): the handler names them."""
    line = one_error(capsys, main(["data", "info", "mnist", "--root", str(tmp_path)]))
    assert "unknown dataset 'mnist' (did you mean 'mmnist'?)" in line


def test_bench_config_is_checked_by_the_handler(capsys, tmp_path):
    line = one_error(capsys, main(["bench", "--config", "huge", "--out", str(tmp_path / "bench")]))
    assert line == "error: --config 'huge': expected a benchmark configuration, one of paper, small"
    assert not (tmp_path / "bench").exists()


def test_bench_help_states_the_benchmarks_own_facts():
    """The two facts of stcsnn.perf.bench that ``bench --help`` states without importing it stay the same as there:
    the summary (the docstring's first paragraph) and the configuration names."""
    from stcsnn.cli import build_parser
    from stcsnn.cli.perf import DESCRIPTION
    from stcsnn.perf import bench

    assert DESCRIPTION == bench.__doc__.split("\n\n")[0].replace("\n", " ")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    (config,) = [a for a in sub.choices["bench"]._actions if a.dest == "config"]
    assert f"configuration: {' or '.join(sorted(bench.CONFIGS, reverse=True))} " in config.help
