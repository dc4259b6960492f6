"""Where the batch commands run their work: this process, ``spawn``-started processes, or a Ray cluster.

A batch command (``cvdeep extract``, ``cvdeep match --pairs``) gives ``run_tasks`` a ``Runner``
(a picklable object: ``setup()`` builds its model once per worker, ``runner(task)`` does one
task) and its ``(key, task)`` list; ``run_tasks`` yields ``(key, result)`` as results arrive,
and the caller alone writes them. A task that raises gives a ``Failure`` in place of its
result (one bad image stops nothing); a ``setup`` that raises stops the run, in every engine.

- ``local``: ``workers`` = 1 runs here; more runs in a ``spawn`` pool (``cvdeep.parallel``),
  results in input order.
- ``ray``: one Ray actor per worker, each holding one model and one CPU (``num_cpus=1``);
  ``address`` joins a running cluster (``"auto"``: the one ``ray start`` made on this machine),
  otherwise a local cluster of ``workers`` CPUs starts here and is shut down at the end
  (a Ray connection this process already holds is used and left open). Results come in
  completion order. Actors read their inputs from paths, so every node must see the same files.
"""
from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .errors import Error
from .parallel import set_threads, spawn_pool, threads_per_worker

ENGINES = ("local", "ray")

Task = TypeVar("Task", contravariant=True)
Result = TypeVar("Result", covariant=True)
R = TypeVar("R")


class Runner(Protocol[Task, Result]):
    """One worker's model and the work it does on one task."""

    def setup(self) -> None:
        """Build the model (once per worker; called again it does nothing). Errors stop the run."""

    def __call__(self, task: Task, /) -> Result:
        """The result of one task. Errors make this task a ``Failure``."""


@dataclass(frozen=True)
class Failure:
    """A task that raised: what was raised."""

    message: str


def _attempt(runner: Runner[Any, R], task: Any) -> R | Failure:
    runner.setup()
    try:
        return runner(task)
    except Exception as error:  # one bad input must not stop a run over millions
        return Failure(f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Engine:
    """Where tasks run: ``kind`` (``local`` or ``ray``), ``workers`` (processes or Ray actors) and, for
    Ray, the ``address`` of a cluster to join (None: start a local one)."""

    kind: str = "local"
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise Error(f"engine: got {self.kind!r}; accepted: {', '.join(ENGINES)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise Error(f"workers: got {self.workers!r}; expected an integer >= 1")
        if self.address is not None and self.kind != "ray":
            raise Error(f"address {self.address!r} is for --engine ray; got engine {self.kind!r}")


def run_tasks(runner: Runner[Any, R], tasks: Sequence[tuple[str, Any]],
              engine: Engine | None = None) -> Generator[tuple[str, R | Failure], None, None]:
    """``(key, runner(task) or Failure)`` for every task, on ``engine``. Close the iterator (or leave
    its loop) to stop the workers. ``engine`` None: this process."""
    engine = engine or Engine()
    if engine.kind == "ray":
        yield from _run_on_ray(runner, tasks, engine)
    elif engine.workers > 1 and len(tasks) > 1:
        count = min(engine.workers, len(tasks))
        with spawn_pool(count, _start_process, (runner, threads_per_worker(count))) as pool:
            results = pool.imap(_process_task, [task for _, task in tasks])
            yield from zip([key for key, _ in tasks], results)
    else:
        for key, task in tasks:
            yield key, _attempt(runner, task)


_process_runner: list[Runner[Any, Any]] = []  # the runner of a spawn-pool process


def _start_process(runner: Runner[Any, Any], threads: int) -> None:
    """Initialiser of a pool process: its share of the CPU threads and its runner, set up by the first
    task so that a setup error reaches the parent as that task's exception (an initialiser that fails
    makes ``multiprocessing.Pool`` start replacement processes forever)."""
    set_threads(threads)
    _process_runner.append(runner)


def _process_task(task: Any) -> Any:
    return _attempt(_process_runner[0], task)


def import_ray() -> Any:
    """The ``ray`` module, or ``cvdeep.Error`` naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise Error("--engine ray needs Ray: pip install 'cvdeep[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_connection(address: str | None, cpus: int) -> Iterator[Any]:
    """This process connected to Ray: the cluster at ``address``, or a local cluster of ``cpus`` CPUs that is
    shut down on leaving (a connection already open is used as it is and left open)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


class _Actor(Generic[R]):
    """A Ray worker: one runner, set up on the first task."""

    def __init__(self, runner: Runner[Any, R]) -> None:
        set_threads(1)
        self.runner = runner

    def run(self, key: str, task: Any) -> tuple[str, R | Failure]:
        return key, _attempt(self.runner, task)


def _run_on_ray(runner: Runner[Any, R], tasks: Sequence[tuple[str, Any]],
                engine: Engine) -> Generator[tuple[str, R | Failure], None, None]:
    if not tasks:
        return
    with ray_connection(engine.address, engine.workers) as ray:
        actor_class = ray.remote(num_cpus=1)(_Actor)
        actors = [actor_class.remote(runner) for _ in range(min(engine.workers, len(tasks)))]
        pending: dict[Any, Any] = {}  # object ref -> its actor
        queue = iter(tasks)
        try:
            for actor in actors * 2:  # two tasks in flight per actor: it never waits for the driver
                submitted = next(queue, None)
                if submitted is not None:
                    pending[actor.run.remote(*submitted)] = actor
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                actor = pending.pop(done)
                submitted = next(queue, None)
                if submitted is not None:
                    pending[actor.run.remote(*submitted)] = actor
                try:
                    key, result = ray.get(done)
                except ray.exceptions.RayTaskError as error:  # a runner that cannot be set up
                    cause = error.cause if isinstance(error.cause, Exception) else error
                    raise Error(f"a Ray worker could not start: {cause}") from cause
                yield key, result
        finally:
            for actor in actors:
                ray.kill(actor)
