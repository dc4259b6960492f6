"""The one writer of cvdeep's hloc-layout HDF5 files (features of ``cvdeep extract``, matches of ``cvdeep match``).

``run_into_h5`` runs a ``Runner`` over named tasks on an ``Engine`` (``cvdeep.engines``) and
writes each result as one group of the file, from this process alone:

- **resumable**: a task whose group holds every expected dataset is skipped; a group missing
  one (a run killed while writing it) is redone;
- **no partial group**: a group is written whole and flushed, and an interruption (Ctrl-C,
  an error) while writing it removes it before the error goes on;
- **settings**: the file's attributes record the settings; resuming with others is refused;
- **failures**: a task that raised is logged and left out (a later run retries it); the
  summary lists them.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..engines import Engine, Failure, Runner, run_tasks
from ..errors import Error
from ..progress import bar as progress_bar

logger = logging.getLogger("cvdeep")


@dataclass
class Record:
    """One group of the file: its datasets and, per dataset, its attributes."""

    datasets: dict[str, np.ndarray]
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)


class Summary(NamedTuple):
    """What a run did: groups written, tasks skipped (already in the file), failed tasks and why."""

    written: int
    skipped: int
    failed: dict[str, str]


def import_h5py(command: str) -> Any:
    """The ``h5py`` module, or ``cvdeep.Error`` naming the extra that installs it."""
    try:
        import h5py
    except ImportError:
        raise Error(f"{command} writes HDF5 and needs h5py: pip install 'cvdeep[h5]'") from None
    return h5py


def _complete(store: Any, name: str, datasets: Sequence[str]) -> bool:
    return name in store and all(dataset in store[name] for dataset in datasets)


def write_record(store: Any, name: str, record: Record) -> None:
    """Write ``record`` as the group ``name`` (replacing a previous one) and flush; interrupted, remove it."""
    if name in store:
        del store[name]
    try:
        group = store.create_group(name)
        for dataset, data in record.datasets.items():
            group.create_dataset(dataset, data=data)
            group[dataset].attrs.update(record.attrs.get(dataset, {}))
        store.flush()
    except BaseException:
        if name in store:
            del store[name]
        raise


def run_into_h5(
    output: str | os.PathLike,
    tasks: Sequence[tuple[str, Any]],
    runner: Runner[Any, Record],
    datasets: Sequence[str],
    settings: dict[str, Any],
    engine: Engine | None = None,
    description: str = "",
    progress: bool = True,
    command: str = "cvdeep",
) -> Summary:
    """Run ``runner`` on every ``(group name, task)`` not yet complete in ``output``; write each result there."""
    h5py = import_h5py(command)
    failed: dict[str, str] = {}
    written = 0
    with h5py.File(output, "a") as store:
        for key, value in settings.items():
            recorded = store.attrs.get(key)
            if recorded is not None and recorded != value:
                raise Error(f"{output} was written with {key}={recorded!r}, not {value!r}; "
                            "resume with the same settings or write another file")
        store.attrs.update(settings)
        todo = [(name, task) for name, task in tasks if not _complete(store, name, datasets)]
        skipped = len(tasks) - len(todo)
        bar = progress_bar(len(tasks), description, unit="task", leave=True, enabled=progress)
        bar.update(skipped)
        results = run_tasks(runner, todo, engine)
        try:
            for name, result in results:
                if isinstance(result, Failure):
                    logger.warning("%s: %s failed: %s", command, name, result.message)
                    failed[name] = result.message
                else:
                    write_record(store, name, result)
                    written += 1
                bar.update(1)
        finally:
            results.close()  # stops the workers when the loop ends early
            bar.close()
    return Summary(written, skipped, failed)


def report(summary: Summary, output: str | os.PathLike, items: str, done: str) -> None:
    """Print the command's last line (``wrote OUT: 3 images extracted, 1 already there``); failed tasks make it
    a ``cvdeep.Error`` (exit status 1) naming them, after the others are written."""
    print(f"wrote {output}: {summary.written} {items} {done}, {summary.skipped} already there")
    if summary.failed:
        shown = "; ".join(f"{name}: {message}" for name, message in list(summary.failed.items())[:3])
        more = f" (and {len(summary.failed) - 3} more)" if len(summary.failed) > 3 else ""
        raise Error(f"{len(summary.failed)} {items} failed and are not in {output}, the others are: {shown}{more}; "
                    "run the command again to retry them")
