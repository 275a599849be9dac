"""core.isolated: a call that aborts or hangs its process costs the worker, never the caller."""

import os
import time

import pytest

from core import isolated
from core.errors import StudioError


def _pid() -> int:
    return os.getpid()


def _abort() -> None:
    os.abort()  # what GDCM's uncaught C++ exception does


def _refuse(name: str) -> None:
    raise StudioError(f"{name}: refused")


def _hang() -> None:
    time.sleep(60)


def test_a_call_runs_in_another_process_and_returns_its_value():
    worker = isolated.call(_pid)
    assert worker != os.getpid()
    assert isolated.call(_pid) == worker  # one worker, kept


def test_an_exception_comes_back_as_itself():
    with pytest.raises(StudioError, match="scan.dcm: refused"):
        isolated.call(_refuse, "scan.dcm")


def test_an_abort_costs_the_worker_and_the_next_call_gets_a_fresh_one():
    before = isolated.call(_pid)
    with pytest.raises(isolated.Crashed, match="ended"):
        isolated.call(_abort)
    after = isolated.call(_pid)
    assert after not in (before, os.getpid())


def test_a_hung_call_is_killed_after_its_timeout():
    start = time.monotonic()
    with pytest.raises(isolated.Crashed, match="took over 1 s"):
        isolated.call(_hang, timeout=1)
    assert time.monotonic() - start < 30
    assert isolated.call(_pid) != os.getpid()


def test_shutdown_ends_every_worker():
    pids = [isolated.call(_pid)] + isolated.workers()
    isolated.shutdown()
    assert isolated.workers() == []
    for pid in pids:
        with pytest.raises(ChildProcessError):  # reaped: no longer a child of this process
            os.waitpid(pid, os.WNOHANG)


def _meet(folder: str, n: int) -> int:
    """Wait, up to 30 s, until `n` calls have come here at once; this worker's pid, or 0 if they never did."""
    from pathlib import Path

    Path(folder, str(os.getpid())).touch()
    for _ in range(3000):
        if len(list(Path(folder).iterdir())) >= n:
            return os.getpid()
        time.sleep(0.01)
    return 0


def _together(fn, args: list[tuple]) -> list:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(lambda a: isolated.call(fn, *a), args))


def test_calls_at_the_same_time_run_side_by_side_in_workers_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(isolated, "WORKERS", 3)
    pids = _together(_meet, [(str(tmp_path), 3)] * 3)  # one call at a time would never meet
    assert 0 not in pids and len(set(pids)) == 3 and os.getpid() not in pids
    assert set(pids) <= set(isolated.workers())


def test_idle_workers_beyond_one_are_retired_after_a_burst(tmp_path, monkeypatch):
    monkeypatch.setattr(isolated, "WORKERS", 3)
    pids = _together(_meet, [(str(tmp_path), 3)] * 3)
    assert len(set(isolated.workers()) & set(pids)) == 3
    isolated.retire_idle()
    (kept,) = isolated.workers()
    assert isolated.call(_pid) == kept


def _nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_no_more_than_workers_processes_however_many_calls(monkeypatch):
    isolated.shutdown()
    monkeypatch.setattr(isolated, "WORKERS", 2)
    pids = _together(_nap, [(0.05,)] * 8)
    assert len(set(pids)) <= 2 and len(isolated.workers()) <= 2


def _meet_then_abort(folder: str) -> None:
    _meet(folder, 2)
    time.sleep(0.2)  # the other call has seen both, and answers
    os.abort()


def test_a_crash_costs_only_its_own_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(isolated, "WORKERS", 2)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        crashing = pool.submit(isolated.call, _meet_then_abort, str(tmp_path))
        answering = pool.submit(isolated.call, _meet, str(tmp_path), 2)
        assert answering.result(timeout=60) != 0  # the two ran at once, and this one's worker answered
        with pytest.raises(isolated.Crashed, match="ended"):
            crashing.result(timeout=60)
    assert answering.result() in isolated.workers()  # kept for the next call


def _modules() -> list[str]:
    import sys

    return sorted(sys.modules)


def test_the_worker_imports_only_what_its_calls_need():
    """A multiprocessing child would re-import the caller's main module (the studio: gradio and torch,
    0.9 GB and 10 s before its first answer); this worker starts bare."""
    modules = isolated.call(_modules)
    assert "core.isolated" in modules and "test_isolated" in modules
    assert not {"gradio", "torch"} & set(modules)  # pytest: this test module imports it


def _shout() -> str:
    os.write(1, b"native code writing to stdout\n")  # as a C library might
    return "answer"


def test_output_on_the_workers_stdout_does_not_corrupt_the_replies():
    assert isolated.call(_shout) == "answer"
    assert isolated.call(_pid) != os.getpid()
