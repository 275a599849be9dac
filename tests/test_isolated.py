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


def test_shutdown_ends_the_worker():
    isolated.call(_pid)
    isolated.shutdown()
    assert isolated._worker is None


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
