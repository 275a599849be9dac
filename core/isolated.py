"""Calls into native code that can take the whole process down, run in a worker process of their own.

GDCM, the decoder pydicom uses for JPEG lossless and JPEG-LS DICOM, aborts the process it runs in on some
damaged files (an uncaught C++ exception; found by fuzzing: a few in every 3,000 mutated files). In the studio
that would end the server for every user. Here such a file costs only the worker: `call` raises `Crashed`,
and the next call starts a fresh worker. pylibjpeg, the decoder of High-Throughput JPEG 2000, runs here too:
fuzzing has not crashed it, but it is the same kind of native code, fed the same untrusted bytes.

The worker is `python -m core.isolated`, started on first use and kept: it imports only what its calls
need (not the studio, as a multiprocessing child would by re-importing the main module: 0.9 GB and 10 s).
Calls are one at a time, as length-prefixed pickles over its stdin and stdout, between this process and
its own child only. Native code that prints to stdout in the worker writes to its stderr instead.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading

TIMEOUT_S = 120.0  # one call; a worker stuck longer than this is killed

_lock = threading.Lock()
_worker: subprocess.Popen | None = None


class Crashed(Exception):
    """The worker died (or hung) while running the call."""


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    size = struct.unpack("<Q", head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - written by this process's own worker (or by this process)


def _start() -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the same imports as here
    return subprocess.Popen(
        [sys.executable, "-m", "core.isolated"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )


def _stop(worker: subprocess.Popen) -> None:
    worker.kill()
    worker.wait()
    for stream in (worker.stdin, worker.stdout):
        stream.close()


def call(fn, *args, timeout: float = TIMEOUT_S):
    """`fn(*args)` in the worker process; its return value, or its exception raised here. `fn` must be a
    module-level function. Raises `Crashed` when the worker dies or runs past `timeout` seconds."""
    global _worker
    with _lock:
        if _worker is None or _worker.poll() is not None:
            _worker = _start()
        worker = _worker
        timer = threading.Timer(timeout, worker.kill)  # a hang ends as a crash: the read below sees EOF
        timer.start()
        try:
            _send(worker.stdin, (fn.__module__, fn.__qualname__, args))
            ok, value = _receive(worker.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            hung = not timer.is_alive()
            _worker = None
            _stop(worker)
            if hung:
                raise Crashed(f"the worker process took over {timeout:g} s") from None
            raise Crashed("the worker process ended while decoding") from None
        finally:
            timer.cancel()
    if not ok:
        raise value
    return value


def shutdown() -> None:
    """End the worker, if one was started (it also ends when this process does)."""
    global _worker
    with _lock:
        worker, _worker = _worker, None
    if worker is not None:
        _stop(worker)


atexit.register(shutdown)


def _serve() -> None:
    """The worker: run calls until this process's stdin closes (the caller ended or let it go)."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray native output must not corrupt the replies
    while True:
        try:
            module, name, args = _receive(requests)
        except EOFError:
            return
        try:
            fn = importlib.import_module(module)
            for part in name.split("."):
                fn = getattr(fn, part)
            reply = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller, as itself
            reply = (False, e)
        try:
            _send(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(replies, (False, RuntimeError(f"{type(reply[1]).__name__} could not be sent back")))


if __name__ == "__main__":
    _serve()
