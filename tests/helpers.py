"""Assertions shared by the command-line tests."""

from __future__ import annotations


def one_error(capsys, rc: int) -> str:
    """The command failed as an expected failure should: exit status 2, exactly one ``error:`` line on stderr,
    no traceback anywhere. Returns the line."""
    out = capsys.readouterr()
    assert rc == 2, (rc, out.err)
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]
