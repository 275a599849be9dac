"""Calls into native code that can take the whole process down, run in a worker process of their own.

GDCM, the decoder pydicom uses for JPEG lossless and JPEG-LS DICOM, aborts the process it runs in on some
damaged files (an uncaught C++ exception; found by fuzzing, about one mutated file in 1,500). In the studio
that would end the server for every user. Here such a file costs only the worker: `call` raises `Crashed`,
and the next call starts a fresh worker. One worker serves the whole process, started on first use.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

TIMEOUT_S = 120.0  # one call; a decoder stuck longer than this is killed

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


class Crashed(Exception):
    """The worker died (or hung) while running the call."""


def _current() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn: a clean interpreter, never a fork of a threaded server
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()  # a hung worker; a dead one is already gone
    pool.shutdown(wait=False, cancel_futures=True)


def call(fn, *args, timeout: float = TIMEOUT_S):
    """`fn(*args)` in the worker process; its return value or its exception as if called here. `fn` must be
    a module-level function. Raises `Crashed` when the worker dies or runs past `timeout` seconds."""
    for attempt in (1, 2):
        pool = _current()
        try:
            future = pool.submit(fn, *args)
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down by another thread's discard
            _discard(pool)
            continue
        try:
            return future.result(timeout=timeout)
        except BrokenProcessPool:
            _discard(pool)
            # Another call's file may have been the one that crashed a shared worker: try once more alone.
            if attempt == 2:
                raise Crashed("the worker process ended while decoding") from None
        except FutureTimeout:
            _discard(pool)
            raise Crashed(f"the worker process took over {timeout:g} s") from None
    raise Crashed("the worker process could not be started")


def shutdown() -> None:
    """End the worker, if one was started (it also ends with this process)."""
    with _lock:
        pool = _pool
    if pool is not None:
        _discard(pool)
