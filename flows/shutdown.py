"""How a privgen command ends when it does not succeed: on SIGINT/SIGTERM, within seconds and
with nothing it started left running; on an unexpected error, as one line that names the error's
type and place but never its message, which may quote the data it choked on."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.progress import Progress


def where(exc: BaseException) -> str:
    """Where an exception was raised, as ``path:line``: the innermost privgen frame, and the
    innermost frame overall when that is in a library. Never the message: it may hold values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    root = Path(__file__).resolve().parents[1]

    def library(frame: traceback.FrameSummary) -> bool:
        parts = Path(frame.filename).parts
        return "site-packages" in parts or not Path(frame.filename).resolve().is_relative_to(root)

    def short(frame: traceback.FrameSummary) -> str:
        path = Path(frame.filename)
        if library(frame):
            parts = path.parts
            cut = max((i for i, p in enumerate(parts) if p in ("site-packages", "lib")),
                      default=len(parts) - 2)
            shown = "/".join(parts[cut + 1:])
        else:
            shown = path.resolve().relative_to(root).as_posix()
        return f"{shown}:{frame.lineno}"

    ours = [f for f in frames if not library(f)]
    inner = short(frames[-1])
    if ours and short(ours[-1]) != inner:
        return f"{short(ours[-1])} (raised in {inner})"
    return inner


class Stopped(BaseException):
    """Raised in the main thread on SIGINT/SIGTERM. A BaseException that is not
    KeyboardInterrupt, so click does not turn it into "Aborted!" and flows unwind through their
    ``finally`` blocks (runs end as failed, Prefect marks them crashed)."""


class Stop:
    """SIGINT/SIGTERM: unwind once, and stop for sure GRACE_S seconds after the first signal
    (at once on a second one): whatever this process started (the ephemeral Prefect server,
    Dask workers) is terminated, so nothing is orphaned; finished shards and checkpoints are
    already on disk (atomic writes), and a rerun or ``--resume`` continues from them.

    The deadline is armed from a wakeup pipe, not only from the Python handler: while a flow
    runs, Prefect swaps in its own SIGTERM handler and unwinds through its task runner first,
    which waits for worker threads still sampling (issue 12: SIGTERM ignored for over 10 s)."""

    GRACE_S = 5.0

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None  # the live display to close before the last line
        self.signum: int | None = None
        self._lock = threading.Lock()
        self._armed = False

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read,), daemon=True).start()

    def _watch(self, read: int) -> None:
        while data := os.read(read, 64):
            for signum in data:
                if signum in (signal.SIGINT, signal.SIGTERM):
                    self._arm(signum)

    def _arm(self, signum: int) -> None:
        if self._armed:
            self.exit()  # a second signal: no more waiting
            return
        self._armed = True
        self.signum = signum
        threading.Thread(target=self._deadline, daemon=True).start()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
        raise Stopped

    def _deadline(self) -> None:
        time.sleep(self.GRACE_S)
        self.exit()

    def exit(self) -> NoReturn:
        """Print one line, end what this process started, and leave with 128 + the signal.

        Called from the main thread once unwinding is done, or from the deadline thread:
        whichever comes second waits for the first to end the process, since returning would
        let the main thread finish as a success (exit status 0)."""
        signum = self.signum or signal.SIGINT
        if not self._lock.acquire(blocking=False):
            time.sleep(30)  # the other caller ends the process well before this
            os._exit(128 + signum)
        try:
            if self.progress is not None:
                self.progress.stop()  # the bar would be drawn again under the last line
            self.console.print(f"[red]stopped[/] by {signal.Signals(signum).name}: finished "
                               "shards and checkpoints are kept; run the same command again "
                               "(training: privgen run --resume RUN_ID) to continue")
            atexit._run_exitfuncs()  # Prefect's own server stop, MLflow's flushes
            end_children()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # Not sys.exit: interpreter shutdown would wait for worker threads still sampling
            # or training, and torch aborts (signal 6) when it is torn down under them.
            os._exit(128 + signum)


def end_children(wait_s: float = 3.0) -> None:
    """Terminate every process this one started (and theirs), then kill what outlives wait_s."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=wait_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


class WithheldValues(logging.Filter):
    """Keeps an unexpected exception's message and traceback out of the run logs that Prefect
    sends to its API (and database): they may quote the values a stage choked on. The record
    keeps the exception's type and place; privgen's own errors, written to name no value, pass
    whole. Installed unless --debug."""

    _FAILED = re.compile(r"^Finished in state (Failed|Crashed)\(.*\)$", re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and not _user_error(exc):
            record.msg = (f"{type(exc).__name__} in {where(exc)} (message and traceback "
                          "withheld: they may hold data values; rerun with --debug)")
            record.args, record.exc_info, record.exc_text = (), None, None
        elif exc is None and self._FAILED.match(str(record.msg)):
            record.msg, record.args = "Finished in state Failed (message withheld)", ()
        return True


def _user_error(exc: BaseException) -> bool:
    from tasks.errors import PrivgenError

    return isinstance(exc, PrivgenError)


def withhold_values_from_prefect_logs() -> None:
    """Add WithheldValues to every Prefect API log handler configured in this process."""
    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, APILogHandler) and not any(
                    isinstance(f, WithheldValues) for f in handler.filters):
                handler.addFilter(WithheldValues())
