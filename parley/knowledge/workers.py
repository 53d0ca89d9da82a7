"""Where an ingest's CPU work runs, so the event loop only does I/O.

Two bounded pools, chosen by measurement (``python -m bench.ingest_loop``, docs/BENCHMARKS.md):

- **processes** for parsing, chunking and tokenizing: pure Python (regular expressions,
  pypdf, the Snowball stemmer's Python side) that holds the GIL. In a thread, a 20 MB
  document starves the loop of the GIL; in another process it costs the loop nothing.
- **threads** for embedding and index updates: ONNX Runtime and numpy/scipy release the
  GIL for the heavy part, and their inputs and outputs (vectors, sparse matrices) would cost
  more to send to another process than to compute here.

``mode="thread"`` runs both kinds in threads (tests, and a machine where processes cannot
be started). Every call waits for a slot: a burst of uploads queues instead of oversubscribing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Literal, ParamSpec, TypeVar

import structlog

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
PoolMode = Literal["process", "thread"]


class Workers:
    def __init__(self, mode: PoolMode = "process", size: int | None = None) -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"unknown worker pool {mode!r}: use process or thread")
        self.mode: PoolMode = mode
        self.size = size or max(1, min(2, os.cpu_count() or 1))
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="parley-ingest")
        self._processes: Executor | None = None

    def _cpu_pool(self) -> Executor:
        if self.mode == "thread":
            return self._threads
        if self._processes is None:
            # spawn: a fork of a process with threads and an event loop is not safe
            self._processes = ProcessPoolExecutor(
                self.size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_worker,
                initargs=(os.getpid(),),
            )
        return self._processes

    async def cpu(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` (a module-level function of picklable arguments) in the process pool."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._cpu_pool(), partial(fn, *args, **kwargs))
        except BrokenProcessPool:
            # A worker died (out of memory on a hostile file, killed): the next call gets a new pool.
            log.error("ingest_worker_died")
            self._processes = None
            raise

    async def thread(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in the bounded thread pool (for code that releases the GIL)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
            self._processes = None


def start_worker(parent: int) -> None:
    """Each worker process's set-up: it exits with the server (``watch_parent``), and its progress
    bars take a thread lock. bm25s tokenizes through tqdm, whose default lock is a multiprocessing
    semaphore, registered with the server's resource tracker; a worker that ends with its server
    never unregisters it, and the tracker's warning about it was the server's last log line, and
    not JSON. A worker's bars are never shown: a thread lock is all they need."""
    try:
        from tqdm import tqdm
    except ImportError:  # bm25s tokenizes without bars then
        pass
    else:
        tqdm.set_lock(threading.RLock())
    watch_parent(parent)


def watch_parent(parent: int, every: float = 0.5) -> None:
    """In each worker process: exit as soon as the server that started it is gone.

    A server killed (``SIGKILL``, the out-of-memory killer) cannot shut its pool down, and its
    workers would wait for work forever: each holds the queue's pipe both ways, so it never
    reads an end of file, and holds the server's stderr open, so a supervisor reading the
    server's log never sees it end. An orphan is handed to another parent; that is the sign."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(0)

    threading.Thread(target=watch, name="parley-parent-watch", daemon=True).start()
