"""Calls into native code that can take the whole process down, run in a worker process of their own.

GDCM, the decoder pydicom uses for JPEG lossless and JPEG-LS DICOM, aborts the process it runs in on some
damaged files (an uncaught C++ exception; found by fuzzing: a few in every 3,000 mutated files). In the studio
that would end the server for every user. Here such a file costs only the worker: `call` raises `Crashed`,
and the next call starts a fresh worker. pylibjpeg, the decoder of High-Throughput JPEG 2000, runs here too:
fuzzing has not crashed it, but it is the same kind of native code, fed the same untrusted bytes.

A worker is `python -m core.isolated`, started on first use and kept: it imports only what its calls
need (not the studio, as a multiprocessing child would by re-importing the main module: 0.9 GB and 10 s).
Up to WORKERS of them run calls side by side (a folder of compressed DICOM decodes on every core, and two
clinicians' JPEG-lossless scans do not queue behind each other); more calls at once wait for a free one.
Each worker takes one call at a time, as length-prefixed pickles over its stdin and stdout, between this
process and its own child only. Native code that prints to stdout in a worker writes to its stderr instead.
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
WORKERS = max(1, min(8, os.cpu_count() or 1))  # at most this many worker processes, started as calls need them

_free = threading.Condition()  # guards the three below
_busy = 0  # calls in flight, one per worker
_idle: list[subprocess.Popen] = []  # started workers waiting for a call
_started: set[subprocess.Popen] = set()  # every live worker, idle or busy


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


def _take() -> subprocess.Popen:
    """A worker for one call: an idle one, or a new one while fewer than WORKERS are busy; else wait."""
    global _busy
    with _free:
        while _busy >= WORKERS:
            _free.wait()
        _busy += 1
        while _idle:
            worker = _idle.pop()
            if worker.poll() is None:
                return worker
            _started.discard(worker)
            _stop(worker)
    try:
        worker = _start()
    except BaseException:
        _give_back(None)
        raise
    with _free:
        _started.add(worker)
    return worker


def _lose(worker: subprocess.Popen) -> None:
    """A worker that died, hung or was interrupted mid-call: end it for good and free its place."""
    with _free:
        _started.discard(worker)
    _stop(worker)
    _give_back(None)


def _give_back(worker: subprocess.Popen | None) -> None:
    """The call is over: `worker` waits for the next one (None: it was lost)."""
    global _busy
    with _free:
        _busy -= 1
        if worker is not None and worker in _started:  # not ended by shutdown() meanwhile
            _idle.append(worker)
        _free.notify()


def call(fn, *args, timeout: float = TIMEOUT_S):
    """`fn(*args)` in a worker process; its return value, or its exception raised here. `fn` must be a
    module-level function. Raises `Crashed` when the worker dies or runs past `timeout` seconds."""
    worker = _take()
    timer = threading.Timer(timeout, worker.kill)  # a hang ends as a crash: the read below sees EOF
    timer.start()
    try:
        _send(worker.stdin, (fn.__module__, fn.__qualname__, args))
        ok, value = _receive(worker.stdout)
    except (EOFError, OSError, pickle.UnpicklingError):
        hung = not timer.is_alive()
        _lose(worker)
        if hung:
            raise Crashed(f"the worker process took over {timeout:g} s") from None
        raise Crashed("the worker process ended while decoding") from None
    except BaseException:  # interrupted between request and reply: its next reply would answer the wrong call
        _lose(worker)
        raise
    finally:
        timer.cancel()
    _give_back(worker)
    if not ok:
        raise value
    return value


def workers() -> list[int]:
    """The process ids of the live workers, idle or busy."""
    with _free:
        return sorted(w.pid for w in _started)


def retire_idle(keep: int = 1) -> None:
    """End idle workers beyond `keep` (after a folder's decoding they would sit idle: about 70 MB each)."""
    with _free:
        extra = _idle[keep:]
        del _idle[keep:]
        _started.difference_update(extra)
    for worker in extra:
        _stop(worker)


def shutdown() -> None:
    """End every worker (they also end when this process does); a call in flight raises `Crashed`."""
    with _free:
        idle, busy = list(_idle), [w for w in _started if w not in _idle]
        _started.clear()
        _idle.clear()
    for worker in idle:
        _stop(worker)
    for worker in busy:  # its caller sees the end of the stream and tidies up (closing it here would race its read)
        worker.kill()


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
