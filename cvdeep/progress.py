"""What cvdeep says while it works: the ``cvdeep`` logger and tqdm progress bars.

Library code never prints. Messages go to the ``logging`` logger ``"cvdeep"`` (and its
children); long operations (weight downloads, the command's steps) show a tqdm bar on
stderr. Bars are on unless switched off for the process with ``set_progress(False)``, the
environment variable ``CVDEEP_NO_PROGRESS=1``, or ``--quiet`` on any ``cvdeep`` command.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("cvdeep")

_enabled: bool | None = None  # None: the environment decides


def set_progress(enabled: bool | None) -> None:
    """Switch progress bars on or off for this process (``None``: back to ``$CVDEEP_NO_PROGRESS``)."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether cvdeep draws progress bars now."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("CVDEEP_NO_PROGRESS", "").lower() not in ("1", "true", "yes")


class _NoBar:
    """What a bar is when bars are off or tqdm is missing: every call does nothing."""

    n: float = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: float | None = None, desc: str = "", unit: str = "it", *, bytes_: bool = False,
        leave: bool = False, enabled: bool | None = None) -> Any:
    """A tqdm bar on stderr (a do-nothing stand-in when bars are off or tqdm is not installed).

    ``bytes_`` counts bytes (KiB, MiB); ``enabled`` overrides the process-wide switch for this bar.
    """
    if not (progress_enabled() if enabled is None else enabled):
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    if bytes_:
        return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=leave,
                    file=sys.stderr)
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr)


@contextlib.contextmanager
def ticking(desc: str, interval: float = 0.5) -> Iterator[Any]:
    """A bar without a known end (elapsed time only), redrawn every ``interval`` s while the block runs:
    for one long call that reports nothing itself (a ``pip download``, one network run)."""
    progress = bar(None, desc, unit="s")
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(interval):
            progress.refresh()

    thread = threading.Thread(target=redraw, daemon=True, name="cvdeep-progress")
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        progress.close()


class Steps:
    """The named steps of one command on one bar: ``steps.start("matching")`` closes the step before
    it (its duration is logged) and shows what runs now; a step of several items advances with
    ``steps.advance()``. Steps that ran longer than a second are logged at INFO on the ``cvdeep`` logger."""

    def __init__(self, total: int, desc: str, enabled: bool | None = None) -> None:
        self._bar = bar(total, desc, unit="step", leave=False, enabled=enabled)
        self._desc = desc
        self._current: str | None = None
        self._started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._stop = threading.Event()
        self._clock: threading.Thread | None = None
        if not isinstance(self._bar, _NoBar):  # keep the elapsed time moving during one long step
            self._clock = threading.Thread(target=self._tick, daemon=True, name="cvdeep-steps")
            self._clock.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._bar.refresh()

    def start(self, step: str) -> None:
        """Begin ``step``; the bar shows its name until the next ``start``."""
        self._finish()
        self._current, self._started = step, time.perf_counter()
        self._bar.set_description(f"{self._desc}: {step}")
        self._bar.refresh()

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """One more unit of the current step done (``detail``: what runs next, shown on the bar)."""
        self._bar.update(n)
        if detail is not None:
            self._bar.set_description(f"{self._desc}: {self._current} ({detail})")

    def _finish(self) -> None:
        if self._current is not None:
            seconds = time.perf_counter() - self._started
            self.timings[self._current] = self.timings.get(self._current, 0.0) + seconds
            if seconds > 1.0:
                logger.info("%s: %s took %.1f s", self._desc, self._current, seconds)
            self._current = None

    def close(self) -> None:
        self._finish()
        self._stop.set()
        if self._clock is not None:
            self._clock.join()
        self._bar.close()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TqdmHandler(logging.Handler):
    """A logging handler writing to stderr through ``tqdm.write``, so messages do not break a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            try:
                from tqdm.auto import tqdm
            except ImportError:
                sys.stderr.write(message + "\n")
            else:
                tqdm.write(message, file=sys.stderr)
        except Exception:  # a handler must not raise (logging.Handler.handleError reports it)
            self.handleError(record)


@contextlib.contextmanager
def command_output(quiet: bool) -> Iterator[None]:
    """What a ``cvdeep`` command shows while it runs: INFO messages of the ``cvdeep`` logger on stderr and
    progress bars, or (``quiet``) warnings only and no bars. Restores the previous state afterwards."""
    saved = (_enabled, logger.level, logger.propagate)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("cvdeep: %(message)s"))
    set_progress(False if quiet else saved[0])
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        set_progress(saved[0])
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
