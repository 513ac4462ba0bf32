"""How stcsnn starts a Python child process (``reproduce --jobs`` cells, ``bench``'s measuring processes, the
``bench --busy`` load): :func:`python_command`, the one place that builds such a command line.

``python -c CODE`` and ``python -m MODULE`` put the current directory first on ``sys.path``: a ``json.py`` or
``torch.py`` in the folder a user runs stcsnn from would be imported, and run, by every child. The children
therefore start without it. ``-I`` is not used: it also drops ``PYTHONPATH``, through which stcsnn runs from a
bare source tree (``PYTHONPATH=src``).

This module imports nothing beyond ``sys`` (the busy-load processes start without torch).
"""

from __future__ import annotations

import sys

#: ``python -P`` (Python >= 3.11): no unsafe path is prepended to ``sys.path``
HAS_SAFE_PATH_FLAG = sys.version_info >= (3, 11)

# Python 3.10 has no -P: with -c, sys.path[0] is "" (the current directory), removed by the child's first
# statement, before anything is imported from a path (sys is built in).
_DROP_CWD = 'import sys\nif sys.path[:1] == [""]:\n    del sys.path[0]\n'


def python_command(code: str, *args: str) -> list[str]:
    """The command line that runs ``code`` in a fresh interpreter of this Python with ``args`` as
    ``sys.argv[1:]`` (``sys.argv[0]`` is ``-c``), importing nothing from the current directory."""
    if HAS_SAFE_PATH_FLAG:
        return [sys.executable, "-P", "-c", code, *args]
    return [sys.executable, "-c", _DROP_CWD + code, *args]
