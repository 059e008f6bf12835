"""The ``privgen`` console: where messages and tables go, and the live display of a flow's
stages (a line per stage message, a progress bar per stage that reports one)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from flows.shutdown import Stop, withhold_values_from_prefect_logs

console = Console(stderr=True)
# Piped or captured output is not cut at 80 columns (tables truncated every cell).
out = Console(width=None if sys.stdout.isatty() else 200)
state = {"debug": False}
stop = Stop(console)


class _StageLog(logging.Handler):
    """Turns the flows' log records into what a person watches: one line per stage message and
    a progress bar fed by records that carry ``extra={"progress": (done, total, unit)}``.

    Errors are left to the CLI's one-line message, so no traceback reaches the user unless
    --debug."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.bars: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            return
        stage = getattr(record, "task_name", None) or getattr(record, "stage", None) or "flow"
        message = record.getMessage()
        if message.startswith(("Finished in state", "Beginning", "Created task run")):
            return
        done_total = getattr(record, "progress", None)
        if done_total:
            done, total, unit = done_total
            if stage not in self.bars:
                self.bars[stage] = self.progress.add_task(f"{stage} ({unit})", total=total,
                                                          unit=unit)
            self.progress.update(self.bars[stage], completed=done, total=total)
            return
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        self.progress.console.print(f"[{style}]{stage:>9}[/] {message}")


def quiet_prefect_console(debug: bool) -> None:
    # Prefect reads these when it first configures logging, so they must be set before any
    # module that imports prefect is loaded.
    if not debug:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        # MLflow and transformers print their own INFO lines and advice into the display.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore")


class _RateColumn(ProgressColumn):
    """Items per second of a bar, in its own unit (records/s while generating)."""

    def render(self, task) -> Text:
        unit, speed = task.fields.get("unit"), task.finished_speed or task.speed
        if not unit or speed is None:
            return Text("")
        return Text(f"{speed:,.0f} {unit}/s" if speed >= 10 else f"{speed:.2f} {unit}/s",
                    style="cyan")


def run_with_progress(title: str, fn, *args):
    """``fn(*args)`` under a live display: one line per stage message, a bar per stage that
    reports progress; ``stop`` (the SIGINT/SIGTERM handler) can close the display."""
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        stop.progress = progress
        overall = progress.add_task(title, total=None)
        handler = _StageLog(progress)
        loggers = [logging.getLogger(name) for name in
                   ("prefect.flow_runs", "prefect.task_runs", "privgen.progress")]
        for lg in loggers:
            lg.addHandler(handler)
        logging.getLogger("privgen.progress").setLevel(logging.INFO)
        if not state["debug"]:
            withhold_values_from_prefect_logs()
        try:
            result = fn(*args)
            progress.update(overall, total=1, completed=1)
            for task in progress.tasks:  # rounds whose number was not known ahead: done now
                if task.total is None:
                    progress.update(task.id, total=task.completed)
            return result
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
