"""Run folders: the list the Runs tab and every picker show."""

import os

import pytest

from core import listing, process, runs


def test_runs_are_listed_newest_first_by_start_time_not_by_name(tmp_path, monkeypatch):
    made = []
    for name, stamp in [("zeta", "20261126-100000"), ("alpha", "20261126-100005"), ("alpha", "20261126-100005")]:
        monkeypatch.setattr(runs.time, "strftime", lambda fmt, stamp=stamp: stamp)
        run = runs.create_run_dir(tmp_path, name)
        runs.write_json(run / "config.json", {"method": "ce"})
        made.append(run.name)
    assert made == ["zeta-20261126-100000", "alpha-20261126-100005", "alpha-20261126-100005-2"]
    (tmp_path / "not-a-run").mkdir()  # no config.json: left out
    assert [r["run"] for r in listing.list_runs(tmp_path)] == made[::-1]


def test_a_run_is_created_once_with_its_config_and_found_only_under_its_folder(tmp_path):
    import pytest

    from core.errors import StudioError

    run = runs.Run.create(tmp_path, "my run/../x", {"method": "ce"})
    assert run.path.parent == tmp_path and "/" not in run.name
    assert run.config() == {"method": "ce"} and run.exists()
    assert runs.Run.find(tmp_path, run.name) == run
    for bad in ("../etc", "", ".", "no-such-run"):
        with pytest.raises(StudioError, match="no run named"):
            runs.Run.find(tmp_path, bad)
    assert runs.Run.create(tmp_path, "my run/../x", {}).path != run.path  # never reused


def test_a_run_answers_for_its_files_before_and_after_they_exist(tmp_path):
    import pytest

    from core.errors import StudioError

    run = runs.Run.create(tmp_path, "r", {"method": "tss-kd"})
    assert run.status() == {} and run.metrics() == [] and run.model_meta() == {} and run.log_tail() == ""
    assert not run.has_model()
    run.set_status("running", epoch=1, pid=999999)
    assert run.add_warning({"kind": "collapse", "epoch": 2, "message": "m"})
    assert not run.add_warning({"kind": "collapse", "epoch": 3, "message": "again"})  # once per kind
    runs.append_metrics(run.path, {"epoch": 1, "val_acc": 0.5})
    run.log_path.write_text("\n".join(f"line {i}" for i in range(30)))
    assert run.status()["status"] == "running" and [w["epoch"] for w in run.status()["warnings"]] == [2]
    assert run.metrics() == [{"epoch": 1, "val_acc": 0.5}] and run.log_tail(2) == "line 28\nline 29"
    run.write_model_meta({"metrics": {"val_acc": 0.5}})
    assert run.model_meta()["metrics"] == {"val_acc": 0.5}
    (run.path / runs.STATUS).write_text("{broken")
    assert run.status() == {}  # a half-written file reads as nothing, not a crash
    run.set_status("running")
    with pytest.raises(StudioError, match="stop it before deleting"):
        run.delete()
    run.set_status("stopped")
    run.delete()
    assert not run.path.exists()


def test_no_module_outside_core_runs_names_a_file_inside_a_run_folder():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = [runs.CONFIG, runs.STATUS, runs.METRICS, runs.LOG, runs.MODEL, runs.MODEL_META, runs.LAST]
    names += [runs.PROCESS_LOG]
    offenders = [
        f"{path.relative_to(root)}: {name}"
        for path in [*root.glob("core/*.py"), *root.glob("ui/*.py"), root / "app.py"]
        if path.name != "runs.py"
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith(("#", '"""'))
        for name in names
        if f'"{name}"' in line or f"'{name}'" in line
    ]
    assert offenders == []


_ADD = """
import sys
import pytest

from core import runs
from pathlib import Path
run, who = Path(sys.argv[1]), sys.argv[2]
while not (run / "go").exists():
    pass
for i in range(100):
    runs.add_warning(run, {"kind": f"{who}-{i}", "epoch": i, "message": "m"})
    runs.set_status(run, "running", epoch=i)
"""


def test_status_updates_from_two_processes_at_once_lose_nothing(tmp_path):
    """The job manager and a trainer update one status.json; each update reads, changes and writes it whole."""
    import subprocess
    import sys
    from pathlib import Path

    run = runs.create_run_dir(tmp_path, "shared")
    runs.set_status(run, "running")
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen([sys.executable, "-c", _ADD, str(run), who], cwd=root, env={"PYTHONPATH": str(root)})
        for who in ("a", "b")
    ]
    (run / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    kinds = {w["kind"] for w in runs.read_json(run / "status.json")["warnings"]}
    assert kinds == {f"{who}-{i}" for who in "ab" for i in range(100)}


def test_a_launch_is_noted_on_a_queued_run_only(tmp_path):
    run = runs.create_run_dir(tmp_path, "launch")
    runs.set_status(run, "queued", pid=None)
    assert runs.note_launch(run, 4242)
    status = runs.read_json(run / "status.json")
    assert status["status"] == "queued" and status["pid"] == 4242 and status["launched"]
    runs.set_status(run, "running", pid=777)  # the trainer got there first
    assert not runs.note_launch(run, 4243)
    assert runs.read_json(run / "status.json")["pid"] == 777


def test_a_launched_queued_run_reads_starting_in_the_runs_table_until_it_runs(tmp_path):
    """The Train tab said "starting" for a trainer still loading its data while the Runs table said
    "queued"; both now read it from `runs.is_starting`."""
    from types import SimpleNamespace

    from ui.runs import COLUMNS, table

    run = runs.Run.create(tmp_path, "loading", {"method": "tss-kd"})
    runs.set_status(run.path, "queued")
    shown = lambda: dict(zip(COLUMNS, table(SimpleNamespace(runs_dir=tmp_path))[0][0], strict=True))  # noqa: E731
    assert shown()["status"] == "queued" and not listing.list_runs(tmp_path)[0]["starting"]
    assert runs.note_launch(run.path, 12345)
    assert shown()["status"] == "starting" and listing.list_runs(tmp_path)[0]["status"] == "queued"
    runs.set_status(run.path, "running")
    assert shown()["status"] == "running" and not listing.list_runs(tmp_path)[0]["starting"]


GONE = 2**22 + 12345  # above any pid Linux hands out


@pytest.mark.parametrize(
    ("state", "pid", "alive"),
    [
        ("running", "self", True),
        ("queued", "self", True),  # launched and still loading its data
        ("running", GONE, False),  # killed, or the machine restarted
        ("queued", GONE, False),
        ("queued", None, False),  # waiting in the studio's queue: no trainer yet
        ("running", None, False),
        ("done", "self", False),
        ("stopped", "self", False),
        ("failed", "self", False),
    ],
)
def test_a_trainer_is_alive_only_for_a_live_run_whose_process_lives(state, pid, alive):
    pid = os.getpid() if pid == "self" else pid  # a trainer inside this very program, as run_training is
    assert runs.trainer_alive({"status": state, "pid": pid, "pid_started": process.started(pid)}) is alive


def sleeper(*argv: str):
    """A live process whose command line ends in `argv`: a trainer's (`-m core.train --prepared RUN`) still
    loading its data, or any other program that may hold a dead trainer's pid."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])


@pytest.fixture
def trainer_pid():
    """The pid of a live process that a studio takes for a run's trainer (its command runs core.train)."""
    proc = sleeper("-m", "core.train", "--prepared", "runs/watched")
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize(
    ("argv", "trainer"),
    [
        (["-m", "core.train", "--prepared", "/runs/a", "--device", "cpu"], True),
        (["-m", "core.train", "--resume", "/runs/a"], True),
        (["-m", "torch.distributed.run", "--standalone", "-m", "core.train", "--prepared", "a"], True),
        (["-m", "core.grid", "--prepared", "/runs/a", "/runs/b"], True),
        (["/src/tsskd/core/train.py", "--config", "c.json"], True),
        (["core/grid.py"], True),
        ([], False),  # another program: one that trains inside itself (a notebook), or any other
        (["-m", "http.server", "core.training"], False),
    ],
)
def test_only_a_process_of_core_train_or_core_grid_is_a_trainer_the_studio_signals(argv, trainer):
    proc = sleeper(*argv)
    try:
        assert process.is_trainer(proc.pid) is trainer
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("recorded", ["its own", "earlier", "not recorded"])
@pytest.mark.parametrize("program", ["trainer", "other"])
def test_a_run_is_trained_only_by_the_very_process_its_status_names(recorded, program):
    """After a crash or a restart the system hands a dead trainer's pid to another process: the run's status
    names the process by its pid and its start, so the studio neither adopts nor signals that process, nor
    says the run is still training. A status written before the start was recorded falls back on the
    process's command line."""
    proc = sleeper(*(["-m", "core.train"] if program == "trainer" else []))
    try:
        started = {"its own": process.started(proc.pid), "earlier": "an earlier boot:1234", "not recorded": None}
        status = {"status": "running", "pid": proc.pid, "pid_started": started[recorded]}
        own = recorded == "its own" or (recorded == "not recorded" and program == "trainer")
        assert runs.trainer_alive(status) is own and process.same(proc.pid, started[recorded]) is own
    finally:
        proc.kill()
        proc.wait()
    assert not runs.trainer_alive(status)  # and never a process that has gone


def test_a_trainer_that_exited_is_not_alive_before_its_parent_reaps_it():
    """An exited process stays in the process table (a zombie) until its parent reaps it, and `kill(pid, 0)`
    still succeeds: a run adopted from elsewhere whose trainer exited must not read as training meanwhile."""
    import time
    from pathlib import Path

    proc = sleeper("-m", "core.train")
    status = {"status": "running", "pid": proc.pid, "pid_started": process.started(proc.pid)}
    assert process.alive(proc.pid) and runs.trainer_alive(status)
    proc.kill()
    deadline = time.monotonic() + 30
    while not Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        assert not process.alive(proc.pid) and not runs.trainer_alive(status)  # exited, not yet reaped
    finally:
        proc.wait()


def test_a_status_names_the_process_by_its_start_as_well_as_its_pid(tmp_path):
    run = runs.create_run_dir(tmp_path, "named")
    written = runs.set_status(run, "running", pid=os.getpid())
    assert written["pid_started"] == process.started(os.getpid()) and written["pid_started"].count(":") == 1
    assert runs.set_status(run, "stopped", pid=None)["pid_started"] is None
    assert runs.set_status(run, "running")["pid_started"] is None  # kept with the pid, as every field is
    assert process.started(GONE) is None and process.started(None) is None


def test_a_claim_to_launch_gives_way_to_the_launched_trainer(tmp_path):
    """Two studios on one runs folder: the one that claims a queued run launches it, the other leaves it; once
    launched, its live trainer says whose the run is and the claim leaves status.json."""

    run = runs.create_run_dir(tmp_path, "claimed")
    runs.set_status(run, "queued", pid=None)
    mine, theirs = ({"pid": os.getpid(), "started": process.started(os.getpid()), "manager": m} for m in "ab")
    assert runs.claim_launch(run, mine)
    status = runs.read_json(run / "status.json")
    assert runs.claimed_elsewhere(status, theirs) and not runs.claimed_elsewhere(status, mine)
    assert not runs.claim_launch(run, theirs) and runs.claim_launch(run, mine)
    trainer = sleeper("-m", "core.train", "--prepared", str(run))
    try:
        assert runs.note_launch(run, trainer.pid)
        status = runs.read_json(run / "status.json")
        assert "claimed_by" not in status and status["pid"] == trainer.pid
        assert runs.launched_elsewhere(status, theirs) and not runs.claim_launch(run, theirs)
    finally:
        trainer.kill()
        trainer.wait()
    # the trainer died before it ran, and a studio that has gone claims nothing (its pid another process's since,
    # or no process's): the run is anyone's to launch
    for gone in ({"pid": GONE, "manager": "gone"}, {"pid": os.getpid(), "started": "earlier:1", "manager": "c"}):
        runs.set_status(run, "queued", pid=None, launched=None, claimed_by=gone)
        assert not runs.launched_elsewhere(runs.read_json(run / "status.json"), theirs)
    assert runs.claim_launch(run, theirs)
    assert runs.read_json(run / "status.json")["claimed_by"] == theirs


def row(epoch, acc, auc=None):
    return {"epoch": epoch, "val_acc": acc, "val_auc": auc, "seconds": 1.0}


@pytest.mark.parametrize(
    ("rows", "kept"),
    [
        ([], None),
        ([row(1, 0.5, 0.7), row(2, 0.9, 0.6), row(3, 0.4, 0.8)], 3),  # by AUC, not accuracy
        ([row(1, 0.5, 0.8), row(2, 0.9, 0.8)], 1),  # the first of equals: a later tie saves nothing
        ([row(1, 0.5), row(2, 0.7), row(3, 0.6)], 2),  # accuracy where there is no AUC
    ],
)
def test_the_kept_epoch_is_the_trainers_choice(rows, kept):
    best = runs.best_row(rows)
    assert (best and best["epoch"]) == kept


def test_a_finished_runs_kept_model_is_the_epoch_best_row_names(tiny_run):
    kept = runs.Run(tiny_run).model_meta()["epoch"]
    assert runs.best_row(runs.read_metrics(tiny_run))["epoch"] == kept


def test_a_live_run_reports_its_best_epoch_so_far_and_the_train_tab_says_so(tmp_path, trainer_pid):
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.watch import monitor

    run = runs.Run.create(tmp_path, "live", {"method": "tss-kd", "epochs": 5})
    run.set_status("running", epoch=3, epochs=5, chance_acc=0.25, pid=trainer_pid)
    for r in (row(1, 0.40, 0.70), row(2, 0.60, 0.85), row(3, 0.55, 0.80)):
        runs.append_metrics(run.path, r)
    jobs = JobManager(tmp_path)
    try:
        s = jobs.status(run.name)
        assert (s["best_epoch"], s["val_acc"], s["val_auc"], s["epoch"]) == (2, 0.60, 0.85, 3)
        text = monitor(Studio(data_root=tmp_path, runs_dir=tmp_path, jobs=jobs), run.name)[0]
        assert "Kept model: epoch 2 (val acc 0.600, val AUC 0.850) so far; chance 0.250." in text
        # once done, the trainer's own figures stand, with the test split's
        run.set_status("done", best_epoch=2, val_acc=0.6, val_auc=0.85, test_acc=0.58, test_auc=0.83)
        s = jobs.status(run.name)
        assert (s["best_epoch"], s["test_acc"]) == (2, 0.58)
        text = monitor(Studio(data_root=tmp_path, runs_dir=tmp_path, jobs=jobs), run.name)[0]
        assert "Kept model: epoch 2 (val acc 0.600, val AUC 0.850); test acc 0.580, test AUC 0.830" in text
    finally:
        jobs.close()


@pytest.mark.parametrize(
    "status, stop, resume",
    [("queued", True, False), ("running", True, False), ("stopped", False, True), ("failed", False, True)]
    + [("done", False, False)],
)
def test_the_train_tab_offers_stop_and_resume_only_where_they_act(tmp_path, trainer_pid, status, stop, resume):
    """Stop lives while the watched run is queued or running, Resume once it is stopped or failed, "Use its
    settings" whenever a run is watched; with no run, none (they answered "is not running" and the like)."""
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.watch import monitor

    run = runs.Run.create(tmp_path, "watched", {"method": "tss-kd", "epochs": 5})
    live = status in ("queued", "running")  # a live trainer's pid, or the manager takes the run for dead (failed)
    run.set_status(status, epoch=1, epochs=5, pid=trainer_pid if live else None)
    jobs = JobManager(tmp_path)
    try:
        ctx = Studio(data_root=tmp_path, runs_dir=tmp_path, jobs=jobs)
        out = monitor(ctx, run.name)
        assert [b["interactive"] for b in out[-3:]] == [stop, resume, True]
        unchanged = monitor(ctx, run.name, out[6])  # nothing changed: nothing sent, the buttons included
        assert all(b == {"__type__": "update"} for b in unchanged[-3:])  # gr.skip()
        for missing in (None, "", "no-such-run"):
            assert [b["interactive"] for b in monitor(ctx, missing)[-3:]] == [False, False, False]
    finally:
        jobs.close()


@pytest.mark.parametrize(
    ("others", "left"),
    [
        ([], 2 * 10.0),  # alone: its 2 epochs left at 10 s
        ([("running", 1, 3, 20.0)], 2 * 10.0 + 2 * 20.0),  # a grid's other run takes its epochs in turn
        ([("running", 4, 5, 20.0)], 2 * 10.0 + 1 * 20.0),  # ... up to this one's last epoch only
        ([("running", 0, 5, None)], 2 * 10.0 + 2 * 10.0),  # none of its epochs yet: one of this run's each
        ([("done", 5, 5, 20.0), ("stopped", 1, 5, 20.0)], 2 * 10.0),  # ended: nothing more
        ([("running", 1, 3, 20.0), ("running", 2, 5, 5.0)], 2 * 10.0 + 2 * 20.0 + 2 * 5.0),
    ],
)
def test_the_time_left_of_a_run_in_a_grid_counts_the_epochs_of_its_grid_between(tmp_path, others, left):
    """A sweep's runs train their epochs in turn in one process: one watched in the Train tab said '20 s
    left' where its grid had minutes to go."""

    from core.jobs import JobManager

    jobs = JobManager(tmp_path)  # before the runs: a restarted studio would check their trainers
    try:
        members = [("running", 3, 5, 10.0), *others]  # the watched run first
        made = [runs.Run.create(tmp_path, f"g{i}", {"method": "tss-kd"}) for i in range(len(members))]
        grid = [run.name for run in made] if others else None
        for run, (state, done, epochs, seconds) in zip(made, members, strict=True):
            run.set_status(state, epochs=epochs, pid=os.getpid(), grid=grid)
            for epoch in range(1, done + 1):
                runs.append_metrics(run.path, row(epoch, 0.5) | {"seconds": seconds})
        assert jobs.status(made[0].name)["seconds_left"] == pytest.approx(left)
    finally:
        jobs.close()


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        ({"preset": "quick"}, "adam 0.001"),  # short runs step with Adam
        ({"preset": "paper"}, "sgd 0.01"),  # the paper's recipe
        ({}, "sgd 0.01"),  # the form's default
        ({"optimizer": "adam", "lr": 3e-4}, "adam 0.0003"),
    ],
)
def test_the_runs_table_says_how_each_run_stepped_its_weights(tmp_path, settings, shown):
    """Quick runs and sweeps train with Adam, the paper recipe with SGD: two runs of one method and
    temperatures read alike in the Runs table unless it shows the optimizer and its learning rate."""
    from types import SimpleNamespace

    from core.config import to_record
    from core.settings import from_settings
    from ui.runs import COLUMNS, table

    runs.Run.create(tmp_path, "r", to_record(from_settings(settings).resolved()))
    (row,) = table(SimpleNamespace(runs_dir=tmp_path))[0]
    assert dict(zip(COLUMNS, row, strict=True))["optimizer"] == shown


@pytest.mark.parametrize(
    ("query", "one", "compared"),
    [
        ("", None, []),
        ("compare={a},{b}&inspect={a}", "{a}", ["{a}", "{b}"]),
        ("compare={b},gone-1,{a}&inspect=gone-1", None, ["{b}", "{a}"]),  # a run deleted since: let go
        ("compare=../{a}&inspect=/etc", None, []),  # only the runs folder's own runs
    ],
)
def test_the_runs_tab_reopens_on_the_runs_its_address_names_that_still_exist(tmp_path, query, one, compared):
    """A reload of the Runs tab comes back to the runs compared and the run picked (ui.runs.reopen)."""
    from types import SimpleNamespace

    import gradio as gr
    from starlette.requests import Request

    from ui.runs import reopen

    names = {k: runs.Run.create(tmp_path, k, {"method": "ce"}).name for k in ("a", "b")}
    query = query.format(**names).encode()
    request = gr.Request(request=Request({"type": "http", "query_string": query, "headers": []}))
    rows, selected, picked, _, _ = reopen(SimpleNamespace(runs_dir=tmp_path), request)
    assert len(rows) == 2 and selected["value"] == [c.format(**names) for c in compared]
    assert picked["value"] == (one and one.format(**names))


def test_a_run_from_before_the_optimizer_was_recorded_shows_an_empty_cell(tmp_path):
    runs.Run.create(tmp_path, "old", {"method": "ce"})
    assert listing.list_runs(tmp_path)[0]["optimizer"] == ""


def test_python_m_core_runs_lists_the_runs_as_the_runs_tab_does(tmp_path, capsys):
    """An engineer on a server without the studio lists the runs folder: the Runs tab's columns and values
    (figures to three decimals, a loading run "starting"), newest first; --json gives every field."""
    import json

    from core.config import to_record
    from core.settings import from_settings

    old = runs.Run.create(tmp_path, "quick", to_record(from_settings({"preset": "quick"}).resolved()))
    runs.append_metrics(old.path, {"epoch": 1, "val_auc": 0.91234, "val_acc": 0.7})
    runs.set_status(old.path, "done", test_acc=0.735)
    new = runs.Run.create(tmp_path, "paper", to_record(from_settings({"preset": "paper"}).resolved()))
    runs.set_status(new.path, "queued")
    runs.note_launch(new.path, 4321)
    assert listing.main(["--runs-dir", str(tmp_path)]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == list(listing.TABLE)
    assert first.split()[:2] == [new.name, "starting"] and "sgd 0.01" in first
    assert second.split()[:2] == [old.name, "done"]
    assert "adam 0.001" in second and "0.912" in second and "0.735" in second and "1/5" in second
    assert listing.main(["--runs-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == listing.list_runs(tmp_path)


def test_python_m_core_runs_on_an_empty_folder_says_so(tmp_path, capsys):
    assert listing.main(["--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no runs in {tmp_path} yet."


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_python_m_core_runs_refuses_a_runs_folder_that_is_not_one(tmp_path, capsys, kind):
    where = tmp_path / "runs"
    if kind == "a file":
        where.write_text("not a folder")
    assert listing.main(["--runs-dir", str(where)]) == 2
    out = capsys.readouterr()
    assert out.err.strip() == f"error: {where}: no such runs folder." and out.out == ""
    assert where.exists() == (kind == "a file")  # nothing made


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_every_file_of_a_run_has_the_mode_the_umask_gives(tmp_path, umask):
    """The weights, the checkpoint and the out-of-distribution check as the JSON beside them: safetensors'
    own writer made its files 0600 whatever the umask, so a run was half readable by the group."""

    from conftest import tiny_config

    from core.train import run_training

    old = os.umask(umask)
    try:
        run = run_training(tiny_config(tmp_path, runs_dir=str(tmp_path / "runs")))
    finally:
        os.umask(old)
    files = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file()}
    assert {"model.safetensors", "model.ood.safetensors", "last.safetensors", "config.json"} <= files.keys(), files
    assert set(files.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in files.items()}


def test_the_runs_folder_is_made_readable_by_its_user_alone_and_one_that_exists_keeps_its_mode(tmp_path):
    from core.jobs import JobManager

    made = tmp_path / "deep" / "runs"
    runs.create_run_dir(made, "a")
    assert made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)  # a lab's group folder: its owner's choice stands
    runs.create_run_dir(shared, "a")
    assert shared.stat().st_mode & 0o777 == 0o775
    jobs = JobManager(tmp_path / "studio-runs")
    try:
        assert (tmp_path / "studio-runs").stat().st_mode & 0o777 == 0o700
    finally:
        jobs.close()
