"""Signals during a training run.

SIGINT (Ctrl-C) and SIGTERM (Slurm, ``docker stop``, Kubernetes) finish the current step, write ``last.pt`` and
return 130 / 143; a second Ctrl-C aborts. ``save_on_signal`` (default SIGUSR1, the pre-emption warning of
Slurm's ``--signal=USR1@90``) writes ``last.pt`` at the end of the current step and trains on. The handlers only
record requests (:class:`Requests`); the loop acts on them between steps. Under DDP the requests travel with the
per-step loss reduction (:meth:`Requests.flags`), so every rank acts on the same step.

Outside the steps (building the data, the test report) SIGTERM raises :class:`Terminated`
(:func:`sigterm_raises`), so that the run lock is released and a new run that never saved is cleaned up.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from stcsnn.config import Config
from stcsnn.errors import ConfigError

# Signals that cannot serve as save_on_signal: they stop the run, or cannot be caught.
_NOT_SAVE_SIGNALS = {"SIGINT", "SIGTERM", "SIGKILL", "SIGSTOP"}
# Names accepted on every platform (a config written on Linux stays valid elsewhere, where it is not handled).
_KNOWN = {"SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGCONT", "SIGWINCH", "SIGURG", "SIGPWR",
          "SIGXCPU", "SIGBREAK"}


def save_signal(cfg: Config) -> signal.Signals | None:
    """The signal of ``cfg.save_on_signal`` ("SIGUSR1" or "USR1"), None for none or where the platform lacks it."""
    name = cfg.save_on_signal
    if name is None:
        return None
    full = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    if full in _NOT_SAVE_SIGNALS or full not in _KNOWN | {s.name for s in signal.Signals}:
        raise ConfigError(f"save_on_signal expects the name of a signal such as SIGUSR1 (not SIGINT, SIGTERM, "
                          f"SIGKILL or SIGSTOP), or null; got {name!r}")
    return getattr(signal, full, None)  # e.g. no SIGUSR1 on Windows: nothing to handle there


def main_thread() -> bool:
    """Signal handlers can only be installed from the main thread."""
    return threading.current_thread() is threading.main_thread()


def notice(text: str) -> None:
    """A line on stderr from a signal handler: a raw write, since the handler may interrupt a print() of the
    progress bar (re-entering a buffered stream raises RuntimeError)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stderr (tests) has no file descriptor
        print("\n" + text, file=sys.stderr, flush=True)
        return
    try:
        os.write(fd, ("\n" + text + "\n").encode())
    except OSError:
        pass


class Requests:
    """Stop and save requests made by signals: recorded by the handlers, served by the loop between steps.

    ``saves`` counts the save_on_signal requests received and ``saves_done`` those served, so that no request
    is lost to a race between a handler and the loop."""

    def __init__(self, announce: bool) -> None:
        self.announce = announce  # rank 0 says what it does; the other ranks stay quiet
        self.stop = False
        self.code = 130  # the exit status of a requested stop: 130 Ctrl-C, 143 SIGTERM
        self.saves = 0
        self.saves_done = 0

    def on_sigint(self, signum, frame) -> None:
        if self.stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._request_stop(130, "interrupt: finishing this step, saving last.pt (Ctrl-C again to abort)")

    def on_sigterm(self, signum, frame) -> None:
        # a repeated SIGTERM changes nothing: the save is under way (a supervisor that cannot wait sends SIGKILL)
        if not self.stop:
            self._request_stop(143, "SIGTERM: finishing this step, saving last.pt")

    def on_save(self, signum, frame) -> None:
        self.saves += 1

    def _request_stop(self, code: int, text: str) -> None:
        self.stop = True
        self.code = code
        if self.announce:
            notice(text)

    def flags(self) -> list[float]:
        """(stop requested, stop by SIGTERM) as numbers, to be summed over the ranks."""
        return [float(self.stop), float(self.stop and self.code == 143)]

    def agree(self, reduced: list[float]) -> bool:
        """Whether any rank was asked to stop, from the summed :meth:`flags`; a SIGTERM anywhere makes every
        rank's exit status 143."""
        if reduced[1] > 0:
            self.code = 143
        if reduced[0] > 0:
            self.stop = True
        return reduced[0] > 0

    @contextmanager
    def installed(self, save: signal.Signals | None) -> Iterator[None]:
        """The handlers in place for the block (main thread only), the previous ones put back after it."""
        handlers = {signal.SIGINT: self.on_sigint, signal.SIGTERM: self.on_sigterm}
        if save is not None:
            handlers[save] = self.on_save
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()} if main_thread() else {}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Terminated(Exception):
    """SIGTERM outside the training steps (data loading, the test report)."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Outside the steps, SIGTERM ends the command at once but as an exception, so that the lock is released and
    a new run that never saved is cleaned up (its default action would kill the process with neither)."""
    if not main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_held() -> Iterator[None]:
    """SIGTERM waits for the end of the block, then raises :class:`Terminated`: files written together in the
    block (a report's .json, .md and .png) are all written or none."""
    if not main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        raise Terminated
