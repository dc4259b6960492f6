"""cvdeep in several processes: the fork guard, thread shares and the spawn pool cvdeep itself uses.

Why ``fork`` is dangerous after torch ran: torch's CPU operators run on an OpenMP thread pool
(``torch.__config__.parallel_info()``: "ATen parallel backend: OpenMP"; GNU libgomp in the
Linux wheels). ``fork()`` copies only the calling thread, so in the child the pool's threads
are gone while libgomp still believes they exist, and the first parallel operator waits for
them forever. A ``multiprocessing`` Pool with the ``fork`` start method (Linux's default
before Python 3.14) then hangs as soon as a child runs a network, after the parent has.
torch's own DataLoader avoids it by calling ``torch.set_num_threads(1)`` first thing in
each worker (``torch/utils/data/_utils/worker.py``); checked here: with it the child runs,
without it it hangs.

cvdeep therefore registers ``os.register_at_fork`` handlers (``install_fork_guard``, called by
``import cvdeep``): in a child forked while the parent had more than one thread and torch was
set to use several, torch is set to one thread before any user code runs, and the parent logs
one warning (logger ``cvdeep``) naming the better start methods. ``spawn`` and
``forkserver`` children start a fresh interpreter and need none of this; cvdeep's own
multi-process path (``cvdeep extract --workers N``) uses ``spawn``.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from typing import Any

logger = logging.getLogger("cvdeep.parallel")

_installed = False
_warned = False
_threads_at_fork: int | None = None
forked_single_threaded = False
"""True in a child process where the fork guard set torch to one thread."""


def native_threads() -> int | None:
    """Threads of this process (Linux: ``/proc/self/task``), None where the platform does not say."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _torch_threads() -> int:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


def _forked_by_torch_dataloader() -> bool:
    """Whether torch's DataLoader is forking (its workers set one thread themselves: no warning needed)."""
    marker = os.sep + os.path.join("torch", "utils", "data") + os.sep
    frame = sys._getframe(1)
    while frame is not None:
        if marker in frame.f_code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _before_fork() -> None:
    global _threads_at_fork, _warned
    _threads_at_fork = native_threads()
    if _warned or (_threads_at_fork is not None and _threads_at_fork <= 1) or _torch_threads() <= 1:
        return
    if _forked_by_torch_dataloader():
        return
    _warned = True
    logger.warning(
        "process %d forks while torch runs on %d threads: torch's OpenMP pool does not survive fork(), so "
        "cvdeep sets torch to 1 thread in the child (as torch's DataLoader does) to keep it from hanging. "
        "Start worker processes with multiprocessing.get_context('spawn') or 'forkserver' to use every thread "
        "(README: Using cvdeep from several processes)", os.getpid(), _torch_threads())


def _after_fork_in_child() -> None:
    global forked_single_threaded
    if (_threads_at_fork is None or _threads_at_fork > 1) and _torch_threads() > 1:
        torch = sys.modules["torch"]
        torch.set_num_threads(1)
        forked_single_threaded = True


def install_fork_guard() -> None:
    """Register the at-fork handlers once per process (``import cvdeep`` does it where ``os.fork`` exists)."""
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    _installed = True


def set_threads(count: int) -> None:
    """Use ``count`` CPU threads in this process: torch's intra-op pool and OpenCV's."""
    import cv2

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, count))
    cv2.setNumThreads(max(1, count))


def threads_per_worker(workers: int) -> int:
    """This process's CPU threads shared by ``workers`` processes (at least one each)."""
    available = _torch_threads() if "torch" in sys.modules else (os.cpu_count() or 1)
    return max(1, available // max(1, workers))


@contextlib.contextmanager
def spawn_pool(processes: int, initializer: Callable[..., Any] | None = None,
               initargs: tuple[Any, ...] = ()) -> Iterator[Pool]:
    """A ``multiprocessing`` pool whose processes are started with ``spawn`` (a fresh interpreter: no
    inherited thread pools, locks or CUDA state). Closed and joined on success, terminated on error."""
    pool = multiprocessing.get_context("spawn").Pool(processes, initializer, initargs)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()
