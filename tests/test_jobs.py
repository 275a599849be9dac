"""The job manager: queued subprocess runs that can be stopped, resumed, and found again after a restart."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import process, runs
from core.data import DataConfig
from core.errors import StudioError
from core.jobs import DIED, JobManager
from core.train import TrainConfig

pytestmark = pytest.mark.slow  # trainer subprocesses: `make test-fast` leaves them out


def cfg(tmp_path: Path, *, train=64, epochs=1, name="job") -> TrainConfig:
    data = DataConfig(image_size=16, synthetic_train=train, synthetic_val=32, synthetic_test=32)
    return TrainConfig(data=data, epochs=epochs, batch_size=16, device="cpu", runs_dir=str(tmp_path), name=name)


def wait_for(predicate, timeout=600.0, every=0.3):
    """Poll until `predicate` holds. The deadline only bounds a hang: on a busy 2-core CI machine a 64-image
    run once took 3.5 minutes from its launch to done (180 s was the limit then)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def status_of(run: Path) -> str:
    return (runs.read_json(run / "status.json", {}) or {}).get("status")


@pytest.fixture
def manager(tmp_path):
    jm = JobManager(tmp_path, grace_s=10, poll_s=0.2)
    yield jm
    for name in jm.active():
        with contextlib.suppress(StudioError):  # it ended meanwhile
            jm.stop(name)
    jm.close()


def test_a_submitted_run_is_queued_then_trained_to_done(manager, tmp_path):
    run = manager.submit(cfg(tmp_path))
    assert status_of(run) in ("queued", "running")
    wait_for(lambda: status_of(run) == "done")
    s = manager.status(run.name)
    assert s["status"] == "done" and s["epoch"] == 1 and s["test_acc"] is not None
    assert (run / "model.safetensors").is_file()
    assert runs.Run(run).status()["launched"]  # noted when its trainer was started, before it ran
    # its process's time outside the epoch (start-up, data, test, saving) is what the next estimate adds
    assert runs.Run(run).status()["outside_epochs_s"] > 0


def test_bad_settings_are_refused_before_any_run_folder(manager, tmp_path):
    with pytest.raises(StudioError, match="at least one epoch"):
        manager.submit(cfg(tmp_path, epochs=0))
    bad = cfg(tmp_path)
    bad.data = DataConfig(dataset="folder", data_path=str(tmp_path / "nowhere"))
    with pytest.raises(StudioError, match="no such file"):
        manager.submit(bad)
    for source in ("medmnist", "folder"):  # no path at all: "" is the current folder, which exists
        bad.data = DataConfig(dataset=source, data_path="")
        with pytest.raises(StudioError, match=f"the {source} data needs its path"):
            manager.submit(bad)
        with pytest.raises(StudioError, match=f"the {source} data needs its path"):
            manager.submit_grid([bad])
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_two_simultaneous_starts_make_two_runs(manager, tmp_path):
    made = []
    threads = [
        threading.Thread(target=lambda: made.append(manager.submit(cfg(tmp_path, name="twin")))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 2 and made[0] != made[1]
    for run in made:
        wait_for(lambda run=run: status_of(run) == "done")


def test_stop_then_resume_finishes_the_run(manager, tmp_path):
    run = manager.submit(cfg(tmp_path, train=256, epochs=3))
    wait_for(lambda: len(runs.read_metrics(run)) >= 1)
    manager.stop(run.name)
    wait_for(lambda: status_of(run) == "stopped")
    assert (run / "last.safetensors").is_file()
    done_before = len(runs.read_metrics(run))
    assert done_before < 3
    manager.resume(run.name)
    wait_for(lambda: status_of(run) == "done")
    assert [r["epoch"] for r in runs.read_metrics(run)] == list(range(1, 4))
    assert "outside_epochs_s" not in runs.Run(run).status()  # spread over two processes: not a figure to go by


def test_a_trainer_that_will_not_stop_is_killed_and_the_run_ends_stopped(tmp_path):
    jm = JobManager(tmp_path, grace_s=0.0, poll_s=0.2)  # no grace: SIGKILL right after SIGTERM
    try:
        run = jm.submit(cfg(tmp_path, train=1024, epochs=20))
        wait_for(lambda: status_of(run) == "running")
        jm.stop(run.name)
        wait_for(lambda: status_of(run) == "stopped")
        wait_for(lambda: not jm.active())
    finally:
        jm.close()


def test_restarting_the_app_finds_a_running_run_again(tmp_path):
    first = JobManager(tmp_path, poll_s=0.2)
    run = first.submit(cfg(tmp_path, train=1024, epochs=20))
    wait_for(lambda: status_of(run) == "running")
    first.close()  # the app goes away; the trainer lives in its own process group
    pid = runs.read_json(run / "status.json")["pid"]
    second = None
    try:
        assert process.alive(pid)
        second = JobManager(tmp_path, poll_s=0.2)
        assert second.active() == [run.name]
        assert second.status(run.name)["status"] == "running"
        second.stop(run.name)
        wait_for(lambda: status_of(run) == "stopped")
    finally:
        if second is not None:
            second.close()
        with contextlib.suppress(ProcessLookupError):  # never left training when the test fails
            os.kill(pid, signal.SIGKILL)


def test_a_run_started_on_the_command_line_after_the_studio_is_stopped_by_it(tmp_path):
    """The studio follows runs started anywhere, so its Stop must stop one started from a shell after it: that
    run once got "is not running" while the page showed it training. The trainer here shares this test's
    process group, as one started by a shell script shares the script's: the stop signals the trainer alone."""
    jm = JobManager(tmp_path, grace_s=30, poll_s=0.2)
    argv = [sys.executable, "-m", "core.train", "--image-size", "16", "--synthetic-train", "1024", "--epochs", "20"]
    argv += ["--batch-size", "16", "--device", "cpu", "--runs-dir", str(tmp_path), "--name", "shell"]
    trainer = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    try:
        assert os.getpgid(trainer.pid) == os.getpgid(0)  # its group is this test's
        run = wait_for(lambda: next(iter(tmp_path.glob("shell-*")), None))
        wait_for(lambda: status_of(run) == "running")
        assert jm.active() == []  # not this studio's: it started after the studio
        jm.stop(run.name)
        assert trainer.wait(timeout=300) == 0  # it finished its step, saved, and ended on its own
        assert status_of(run) == "stopped" and (run / "last.safetensors").is_file()  # resumable
        with pytest.raises(StudioError, match="is not running"):
            jm.stop(run.name)  # stopped: nothing more to stop
    finally:
        if trainer.poll() is None:
            trainer.kill()
        jm.close()


def test_two_studios_on_one_runs_folder_launch_a_queued_run_once(tmp_path):
    """A studio started while another has a run queued queues it too (it finds it queued), and both wait for
    the device's slot. When it comes free only one may launch the run: both did, the second trainer was refused
    or trained the same folder alongside, and its studio marked the run failed while the other trained it."""
    first = JobManager(tmp_path, per_device=1, grace_s=30, poll_s=0.2)
    second = None
    try:
        busy = first.submit(cfg(tmp_path, train=1024, epochs=20, name="busy"))  # the device's one slot
        waiting = first.submit(cfg(tmp_path, train=1024, epochs=20, name="waiting"))
        wait_for(lambda: status_of(busy) == "running")
        second = JobManager(tmp_path, per_device=1, grace_s=30, poll_s=0.2)  # adopts `busy`, queues `waiting`
        assert status_of(waiting) == "queued" and second.active() == [busy.name]
        first.stop(busy.name)  # the slot comes free for both studios at once
        wait_for(lambda: status_of(waiting) == "running")
        time.sleep(10)  # long enough for a second trainer to start, be refused, and its end be handled
        owners = [jm for jm in (first, second) if waiting.name in jm.active()]
        assert len(owners) == 1 and status_of(waiting) == "running"
        assert "has started before" not in runs.Run(waiting).process_log_path.read_text()  # no second trainer
        other = second if owners[0] is first else first
        other.stop(waiting.name)  # queued there once: stopped where it trains
        wait_for(lambda: status_of(waiting) == "stopped")
        wait_for(lambda: not owners[0].active())
    finally:
        for jm in (first, second):
            if jm is not None:
                for name in jm.active():
                    with contextlib.suppress(StudioError):
                        jm.stop(name)
                jm.close()


@pytest.mark.parametrize(
    ("started", "said"),
    [
        ("an earlier boot:1234", "is not running"),  # the trainer died, its pid given to this process since
        (None, r"trains inside another program \(process \d+\); stop it there"),  # it trains inside itself
    ],
    ids=["pid-reused", "another-program"],
)
def test_stop_never_signals_a_process_that_is_not_a_trainer(tmp_path, started, said):
    """A run whose status names a process that is not a trainer of its own: one that took a dead trainer's pid,
    or a program training the run inside itself (a notebook calling run_training). Stop says so and leaves that
    process alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    jm = JobManager(tmp_path, poll_s=0.2)
    try:
        run = runs.create_run_dir(tmp_path, "orphan")
        runs.write_json(run / "config.json", {})
        runs.set_status(run, "running", pid=other.pid, epoch=1, epochs=5, device="cpu")
        if started:
            runs.set_status(run, "running", pid_started=started)
        with pytest.raises(StudioError, match=said):
            jm.stop(run.name)
        time.sleep(0.5)
        assert other.poll() is None  # not signalled
        assert status_of(run) == "running" and jm.active() == ([] if started else [run.name])
    finally:
        other.kill()
        other.wait()
        jm.close()


def test_restart_marks_a_dead_trainer_failed_and_requeues_queued_runs(tmp_path):
    dead = runs.create_run_dir(tmp_path, "dead")
    runs.write_json(dead / "config.json", {})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    runs.set_status(dead, "running", pid=proc.pid)
    queued = runs.create_run_dir(tmp_path, "waiting")
    from dataclasses import asdict

    runs.write_json(queued / "config.json", asdict(cfg(tmp_path).resolved()))
    runs.set_status(queued, "queued", device="cpu")
    jm = JobManager(tmp_path, poll_s=0.2)
    try:
        status = runs.read_json(dead / "status.json")
        assert status["status"] == "failed" and status["error"] == DIED
        wait_for(lambda: status_of(queued) == "done")
    finally:
        jm.close()


@pytest.mark.parametrize("started", ["an earlier boot:1234", None], ids=["recorded", "not-recorded"])
@pytest.mark.parametrize("state", ["running", "queued"])
def test_restart_adopts_no_process_that_took_a_dead_trainers_pid(tmp_path, state, started):
    """A trainer killed with the machine, its pid given since to another program: the restarted studio marks
    its running run failed, or launches its queued one anew, and leaves that program alone (it used to adopt
    any live pid, show the run as training forever and signal the program at Stop)."""
    from dataclasses import asdict

    run = runs.create_run_dir(tmp_path, "reused")
    runs.write_json(run / "config.json", asdict(cfg(tmp_path).resolved()))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        if state == "running":
            runs.set_status(run, "running", pid=other.pid, epoch=0, epochs=1, device="cpu")
        else:
            runs.set_status(run, "queued", device="cpu", pid=None)
            assert runs.note_launch(run, other.pid)
        # the dead trainer's start, or none where an older version wrote the status (its command line tells)
        runs.set_status(run, state, pid_started=started)
        jm = JobManager(tmp_path, poll_s=0.2)
        try:
            if state == "running":
                status = runs.read_json(run / "status.json")
                assert status["status"] == "failed" and status["error"] == DIED and jm.active() == []
            else:
                wait_for(lambda: status_of(run) == "done")  # trained by a trainer of its own
                assert runs.read_json(run / "status.json")["pid"] != other.pid
        finally:
            jm.close()
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


def test_restart_adopts_a_trainer_still_loading_its_data_instead_of_starting_a_second(tmp_path):
    """A trainer loads its data before it marks the run running (minutes for a big DICOM folder); a studio
    restarted meanwhile used to queue the run again, and two trainers wrote one run folder."""
    from dataclasses import asdict

    run = runs.create_run_dir(tmp_path, "loading")
    runs.write_json(run / "config.json", asdict(cfg(tmp_path).resolved()))
    runs.set_status(run, "queued", device="cpu", pid=None)
    loading = subprocess.Popen(  # a trainer's command line, loading its data for a minute
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "core.train", "--prepared", str(run)],
        start_new_session=True,
    )
    reaped = threading.Thread(target=loading.wait, daemon=True)  # as init reaps the old studio's orphan
    reaped.start()
    try:
        assert runs.note_launch(run, loading.pid)  # as the first studio did when it started the trainer
        jm = JobManager(tmp_path, poll_s=0.2)
        try:
            assert jm.active() == [run.name] and jm.status(run.name)["starting"]
            time.sleep(1.5)  # several scheduling rounds: nothing else is started for it
            assert not (run / "process.log").exists() and status_of(run) == "queued"
            jm.stop(run.name)
            wait_for(lambda: status_of(run) == "stopped", timeout=30)
        finally:
            jm.close()
        reaped.join(timeout=30)
        assert loading.returncode is not None and loading.returncode != 0  # it was the one stopped
    finally:
        loading.kill()
        loading.wait()


def test_a_run_whose_data_vanished_fails_with_the_reason(manager, tmp_path):
    """Data without scans is refused at Start; data whose scans vanish after it fails the run, saying why."""
    import shutil

    from helpers import class_folders

    folder = tmp_path / "scans"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
    bad = cfg(tmp_path)
    bad.data = DataConfig(dataset="folder", data_path=str(folder))  # exists but holds no scans
    with pytest.raises(StudioError, match="scans: no scans found"):
        manager.submit(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scans"]
    class_folders(folder, {"a": 6, "b": 6})
    run = manager.submit(bad)
    for c in ("a", "b"):  # gone before the trainer (a new process importing torch) reads them
        shutil.rmtree(folder / c)
        (folder / c).mkdir()
    wait_for(lambda: status_of(run) == "failed")
    assert "no scans found" in runs.read_json(run / "status.json")["error"]
    from ui.context import Studio
    from ui.watch import monitor

    text, warnings, *_ = monitor(Studio(data_root=tmp_path, runs_dir=tmp_path, jobs=manager), run.name)
    assert "failed" in text and "**Error:**" in text and "no scans found" in text  # what the Train tab shows
    assert warnings == ""  # it never trained, so nothing to warn about


def test_run_ids_cannot_escape_the_runs_folder(manager, tmp_path):
    for name in ("..", "../..", "/etc", ""):
        with pytest.raises(StudioError):
            manager.find(name)


def test_a_trainer_killed_mid_epoch_is_marked_failed_and_resumes_to_the_same_result(manager, tmp_path):
    import signal

    straight = manager.submit(cfg(tmp_path, train=128, epochs=3, name="straight"))
    killed = manager.submit(cfg(tmp_path, train=128, epochs=3, name="killed"))
    wait_for(lambda: status_of(straight) == "done")
    wait_for(lambda: status_of(killed) == "running" and len(runs.read_metrics(killed)) >= 1)
    time.sleep(0.3)  # into epoch 2
    os.kill(runs.read_json(killed / "status.json")["pid"], signal.SIGKILL)
    wait_for(lambda: status_of(killed) == "failed")
    assert runs.read_json(killed / "status.json")["error"] == DIED
    assert len(runs.read_metrics(killed)) < 3
    manager.resume(killed.name)
    wait_for(lambda: status_of(killed) == "done")
    a, b = runs.read_metrics(straight), runs.read_metrics(killed)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_ce", "train_kd", "val_acc", "val_auc", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key


def test_a_run_on_two_processes_is_launched_with_torchrun(manager, tmp_path):
    run = manager.submit(cfg(tmp_path, train=128, epochs=1, name="pair"), processes=2)
    assert runs.read_json(run / "status.json")["processes"] == 2
    wait_for(lambda: status_of(run) == "done")
    status = runs.read_json(run / "status.json")
    assert status["processes"] == 2 and "more processes" in (run / "train.log").read_text()
    with pytest.raises(StudioError, match="batch size"):
        manager.submit(cfg(tmp_path, name="too-many"), processes=9)


@pytest.mark.parametrize("processes", [0, -1])
def test_fewer_than_one_process_is_refused_before_any_run_folder(manager, tmp_path, processes):
    before = sorted(manager.runs_dir.iterdir()) if manager.runs_dir.exists() else []
    with pytest.raises(StudioError, match=f"a run trains in at least one process, not {processes}"):
        manager.submit(cfg(tmp_path, name="none"), processes=processes)
    assert (sorted(manager.runs_dir.iterdir()) if manager.runs_dir.exists() else []) == before


def test_runs_per_device_share_the_cpu_and_wait_returns_when_all_end(tmp_path):
    jm = JobManager(tmp_path, per_device=2, grace_s=10, poll_s=0.2)
    try:
        first, second, third = (jm.submit(cfg(tmp_path, train=128, epochs=2, name=f"sweep{i}")) for i in range(3))
        assert wait_for(lambda: len(jm.active()) == 2)  # two at once, the third waits its turn
        assert status_of(third) == "queued"
        expected = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
        for run in (first, second):  # each trainer gets its share of the cores, not all of them
            wait_for(lambda r=run: status_of(r) == "running" and runs.read_json(r / "status.json").get("pid"))
            pid = runs.read_json(run / "status.json")["pid"]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"OMP_NUM_THREADS={expected}".encode() in environ
        with pytest.raises(StudioError, match="still going"):
            jm.wait([first, second, third], timeout=0.1)
        assert jm.wait([first, second, third], timeout=300) == {r.name: "done" for r in (first, second, third)}
        assert not jm.active()
    finally:
        jm.close()


def test_runs_per_device_must_be_positive(tmp_path):
    with pytest.raises(StudioError, match="at least 1"):
        JobManager(tmp_path, per_device=0)


def grid_cfgs(tmp_path: Path, tag: str, *, train=64, epochs=1) -> list[TrainConfig]:
    from core.sweep import temperature_grid

    return temperature_grid(cfg(tmp_path, train=train, epochs=epochs), [2.0, 4.0], [0.4], tag=tag)


def test_a_grid_is_one_trainer_for_all_its_runs_and_each_ends_an_ordinary_run(manager, tmp_path):
    grid = manager.submit_grid(grid_cfgs(tmp_path, "g1"))
    assert [status_of(r) for r in grid] in (["queued"] * 2, ["running"] * 2)
    assert manager.wait(grid, timeout=300) == {r.name: "done" for r in grid}
    statuses = [runs.Run(r).status() for r in grid]
    assert len({s["pid"] for s in statuses}) == 1 and all(s["grid"] == [r.name for r in grid] for s in statuses)
    for r in grid:
        s = manager.status(r.name)
        assert s["status"] == "done" and s["epoch"] == 1 and s["test_acc"] is not None
        assert (r / "model.safetensors").is_file()


def test_a_grid_waits_for_a_free_slot_like_one_run_and_counts_as_one(tmp_path):
    jm = JobManager(tmp_path, per_device=1, poll_s=0.2)
    try:
        first = jm.submit(cfg(tmp_path, train=128, epochs=2, name="first"))
        grid = jm.submit_grid(grid_cfgs(tmp_path, "g2"))
        wait_for(lambda: status_of(first) == "running")
        assert [status_of(r) for r in grid] == ["queued", "queued"]
        assert jm.wait([first, *grid], timeout=400) == {r.name: "done" for r in (first, *grid)}
    finally:
        jm.close()


def test_stopping_one_run_of_a_grid_stops_it_alone_and_it_resumes_alone(manager, tmp_path):
    grid = manager.submit_grid(grid_cfgs(tmp_path, "g3", train=256, epochs=3))
    wait_for(lambda: len(runs.read_metrics(grid[0])) >= 1)
    manager.stop(grid[1].name)  # the grid's one trainer stops this run and trains the other on
    wait_for(lambda: status_of(grid[1]) == "stopped")
    manager.resume(grid[1].name)  # while the grid's process may still train the other
    assert manager.wait(grid, timeout=600) == {r.name: "done" for r in grid}
    assert [[row["epoch"] for row in runs.read_metrics(r)] for r in grid] == [[1, 2, 3]] * 2
    assert runs.Run(grid[1]).status()["pid"] != runs.Run(grid[0]).status()["pid"]  # it finished in its own
    with pytest.raises(StudioError, match="not running"):
        manager.stop(grid[0].name)


def test_stopping_every_run_of_a_grid_stops_its_process_and_each_resumes_alone(manager, tmp_path):
    grid = manager.submit_grid(grid_cfgs(tmp_path, "g6", train=256, epochs=3))
    wait_for(lambda: len(runs.read_metrics(grid[0])) >= 1)
    for r in grid:
        manager.stop(r.name)
    assert manager.wait(grid, timeout=120) == {r.name: "stopped" for r in grid}
    assert not manager.active()
    for r in grid:
        manager.resume(r.name)
    assert manager.wait(grid, timeout=600) == {r.name: "done" for r in grid}
    assert [[row["epoch"] for row in runs.read_metrics(r)] for r in grid] == [[1, 2, 3]] * 2


def test_a_queued_grid_is_queued_together_again_after_a_restart(tmp_path):
    jm = JobManager(tmp_path, per_device=1, poll_s=0.2)
    first = jm.submit(cfg(tmp_path, train=256, epochs=2, name="first"))
    grid = jm.submit_grid(grid_cfgs(tmp_path, "g4"))
    jm.close()  # the app goes away while the grid is queued
    second = JobManager(tmp_path, per_device=1, poll_s=0.2)
    try:
        assert second.wait([first, *grid], timeout=400) == {r.name: "done" for r in (first, *grid)}
        assert len({runs.Run(r).status()["pid"] for r in grid}) == 1
    finally:
        second.close()


def test_a_grid_of_runs_that_differ_in_more_than_temperatures_makes_no_run(manager, tmp_path):
    from dataclasses import replace

    cfgs = grid_cfgs(tmp_path, "g5")
    cfgs[1] = replace(cfgs[1], epochs=3)
    with pytest.raises(StudioError, match="differ only in their temperatures.*epochs"):
        manager.submit_grid(cfgs)
    assert not any(tmp_path.iterdir())


def test_stopping_a_sweep_stops_its_queued_and_running_runs_and_no_other(tmp_path):
    from core.sweep import stop_sweep

    jm = JobManager(tmp_path, per_device=1, grace_s=10, poll_s=0.2)
    try:
        first = jm.submit_grid(grid_cfgs(tmp_path, "sweepA", train=256, epochs=3))
        second = jm.submit_grid(grid_cfgs(tmp_path, "sweepB", train=256, epochs=3))  # queued behind it
        wait_for(lambda: len(runs.read_metrics(first[0])) >= 1)
        assert stop_sweep(jm, "sweepB") == sorted(r.name for r in second)  # out of the queue
        assert [status_of(r) for r in second] == ["stopped", "stopped"]
        assert [status_of(r) for r in first] == ["running", "running"]  # the other sweep trains on
        assert stop_sweep(jm, "sweepA") == sorted(r.name for r in first)
        assert jm.wait([*first, *second], timeout=120) == {r.name: "stopped" for r in (*first, *second)}
        assert not jm.active()  # the grid's process ended with its last run
        with pytest.raises(StudioError, match="no run of the sweep sweepA is queued or running"):
            stop_sweep(jm, "sweepA")
        jm.resume(second[0].name)  # each resumes alone
        assert jm.wait([second[0]], timeout=600) == {second[0].name: "done"}
    finally:
        jm.close()
