"""Temperature sweeps: the grid of configs, the grid of results, the tab's sweep (trained as one grid) and the
sweep benches end to end."""

import json
import re
from dataclasses import asdict

import numpy as np
import pytest

from bench import sweep as sweep_bench
from bench import temperatures as temperature_bench
from core import listing, runs
from core.config import QUICK
from core.data import DataConfig
from core.errors import StudioError
from core.sweep import MAX_RUNS, grid_results, new_tag, progress_text, temperature_grid
from core.train import TrainConfig

pytestmark = pytest.mark.slow  # sweeps of trainer subprocesses: `make test-fast` leaves them out

BASE = TrainConfig(data=DataConfig(image_size=16, synthetic_train=32, synthetic_val=16, synthetic_test=16), epochs=1)


def test_the_grid_holds_one_tss_kd_config_per_pair_and_keeps_the_rest():
    cfgs = temperature_grid(BASE, [2.0, 4.0], [0.4, 1.0, 4.0], tag="s1")
    assert [(c.t_target, c.t_nontarget) for c in cfgs] == [(2, 0.4), (2, 1), (2, 4), (4, 0.4), (4, 1), (4, 4)]
    assert [c.name for c in cfgs][:2] == ["s1-T2-t0.4", "s1-T2-t1"]
    assert {c.method for c in cfgs} == {"tss-kd"}
    assert all(c.data == BASE.data and c.epochs == 1 for c in cfgs)
    twice = temperature_grid(BASE, [2.0, 4.0, 2.0], [0.4, 0.4], tag="s2")  # a value given twice: its runs once
    assert [(c.t_target, c.t_nontarget) for c in twice] == [(2, 0.4), (4, 0.4)]


@pytest.mark.parametrize(
    ("targets", "nontargets", "message"),
    [
        ([], [0.4], "at least one"),
        ([4.0], [0.0], "positive"),
        ([-1.0], [0.4], "positive"),
        ([float("nan")], [0.4], "positive"),
        ([float(i + 1) for i in range(6)], [0.1, 0.2, 0.3, 0.4, 0.5], f"at most {MAX_RUNS}"),
    ],
)
def test_bad_grids_are_refused(targets, nontargets, message):
    with pytest.raises(StudioError, match=message):
        temperature_grid(BASE, targets, nontargets, tag="bad")


def test_grid_results_place_each_run_and_leave_missing_ones_empty(tmp_path):
    for cfg, value in zip(temperature_grid(BASE, [2.0, 4.0], [0.4, 4.0], tag="s2"), [0.7, None, 0.9, 0.6], strict=True):
        run = runs.create_run_dir(tmp_path, cfg.name)
        runs.write_json(run / "config.json", asdict(cfg))
        runs.set_status(run, "done" if value is not None else "running", test_acc=value)
    other = runs.create_run_dir(tmp_path, "s20-T2-t0.4")  # another sweep whose tag starts the same way
    runs.write_json(other / "config.json", asdict(temperature_grid(BASE, [2.0], [0.4], tag="s20")[0]))
    tts, tns, grid, rows = grid_results(tmp_path, "s2", metric="test_acc")
    assert (tts, tns, len(rows)) == ([2.0, 4.0], [0.4, 4.0], 4)
    assert grid[0, 0] == 0.7 and np.isnan(grid[0, 1]) and grid[1, 0] == 0.9 and grid[1, 1] == 0.6


@pytest.mark.parametrize(
    "statuses, text",
    [
        (["done", "done"], "2 of 2 runs done"),
        (["done", "running", "queued", "queued"], "1 of 4 runs done, 1 running, 2 queued"),
        (["stopped", "failed", "done"], "1 of 3 runs done, 1 stopped, 1 failed"),
    ],
)
def test_a_sweeps_progress_counts_every_way_its_runs_stand(statuses, text):
    assert progress_text([{"status": s} for s in statuses]) == text


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_estimate_held_back_while_a_run_trained_is_made_once_no_run_trains(tmp_path, device):
    """No trial steps while a run trains (they would slow it): the sweep form's estimate says the time is not
    known yet, and the tab's poll makes it once the run has ended, without a field having to change. Where no
    trial steps are made at all (a GPU with nothing measured) the poll leaves the text alone."""
    import os

    import gradio as gr

    from core.jobs import JobManager
    from ui.context import Studio
    from ui.temperatures import NOT_KNOWN, refresh_estimate, sweep_estimate

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    form = ("2, 4", "0.4", 1, device, 16, "nontarget", 0, 128, 32)
    training = tmp_path / "runs" / "a-run"
    try:
        with jobs._lock:
            jobs._procs[training] = os.getpid()  # a run training (a live process) on this studio
        held = sweep_estimate(ctx, *form)
        assert held.startswith("2 runs of 1 epoch x 128 images; time on ") and NOT_KNOWN in held
        assert refresh_estimate(ctx, held, *form) == gr.skip()  # still training: no trial steps
        with jobs._lock:
            jobs._procs.pop(training)
        made = refresh_estimate(ctx, held, *form)
        if device == "cpu":
            assert made.startswith("2 runs of 1 epoch x 128 images: **about ")
            assert refresh_estimate(ctx, made, *form) == gr.skip()  # made: nothing more to do
        else:
            assert made == gr.skip()
    finally:
        jobs.close()


def test_the_sweep_form_says_how_long_its_runs_take_before_it_is_queued(tmp_path):
    from core.jobs import JobManager
    from ui.context import Studio
    from ui.temperatures import SWEEP_WARMUP, sweep_estimate

    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        text = sweep_estimate(ctx, "2, 4, 8", "0.4, 4", 5, "cpu", 16, "nontarget", SWEEP_WARMUP)
        assert text.startswith("6 runs of 5 epochs x 2,000 images: **about ") and "on cpu" in text
        assert "Note" not in text  # the sweep's default: no warm-up, KD at full weight in its short runs
        warm = sweep_estimate(ctx, "2, 4, 8", "0.4, 4", 5, "cpu", 16, "nontarget", 10)
        assert "reaches only 50% of its value" in warm  # the Train tab's 10-epoch warm-up would not finish
        one = sweep_estimate(ctx, "2", "0.4", 1, "cpu", 16, "nontarget", 10)
        assert one.startswith("1 run of 1 epoch x 2,000 images: **about ")
        # a bad grid: what Queue sweep would say, before it is clicked (it was left blank)
        bad = sweep_estimate(ctx, "2, -1", "0.4", 5, "cpu", 16, "nontarget", 10)
        assert bad == "**Not a sweep yet:** temperatures must be positive numbers, not -1."
        unread = sweep_estimate(ctx, "2 4", "0.4", 5, "cpu", 16, "nontarget", 10)
        assert unread == "**Not a sweep yet:** t_target values: write numbers separated by commas (2, 4, 8), not '2 4'."
        emptied = sweep_estimate(ctx, "2", "0.4", None, "cpu", 16, "nontarget", 10)
        assert emptied == "**Not a sweep yet:** Epochs per run: give a number."
        small = sweep_estimate(ctx, "2, 4", "0.4", 3, "cpu", 16, "nontarget", 0, 300)
        assert small.startswith("2 runs of 3 epochs x 300 images: **about ")  # long or not: the next test
        # 25 pairs (a sweep's most) of 50-epoch runs: hours on any CPU, and the form says what shortens them
        big = sweep_estimate(ctx, "1, 2, 4, 6, 8", "0.2, 0.4, 1, 2, 4", 50, "cpu", 16, "nontarget", 0)
        assert big.startswith("25 runs of 50 epochs x 2,000 images: **about ") and " h " in big
        assert "That is long: each run takes about " in big and "fewer pairs, epochs or training images" in big
        no_images = "**Not a sweep yet:** the demo data needs at least one training image"
        for images, says in ((0, no_images), (-5, no_images), (None, "Training images per run: give a number")):
            assert says in sweep_estimate(ctx, "2", "0.4", 1, "cpu", 16, "nontarget", 0, images)  # no estimate
        small_batch = "**Not a sweep yet:** the batch size must be at least 2 (batch norm needs two images)."
        for batch, says in ((0, small_batch), (1, small_batch), (None, "Batch size: give a number.")):
            assert says in sweep_estimate(ctx, "2", "0.4", 1, "cpu", 16, "nontarget", 0, 300, batch)
    finally:
        jobs.close()


@pytest.mark.parametrize(("pairs", "seconds", "long"), [("0.4", 60, False), ("0.4", 440, False), ("0.4, 4", 240, True)])
def test_a_sweep_is_called_long_by_the_time_its_runs_take(tmp_path, monkeypatch, pairs, seconds, long):
    """Over 15 minutes in all (core.estimate.LONG_S), the form says so and what shortens it; the figure per run is
    fixed here (the trial steps' speed is the machine's, and a busy machine once made a small sweep long)."""
    from core.jobs import JobManager
    from ui import temperatures
    from ui.context import Studio
    from ui.watch import duration

    monkeypatch.setattr(
        temperatures, "estimate_for", lambda ctx, cfg: ("cpu", {"seconds": seconds, "images_per_s": 30})
    )
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        text = temperatures.sweep_estimate(ctx, "2, 4", pairs, 3, "cpu", 16, "nontarget", 0, 300)
    finally:
        jobs.close()
    n = 2 * len(pairs.split(","))
    assert text.startswith(
        f"{n} runs of 3 epochs x 300 images: **about {duration(n * seconds)}** on cpu (30 images/s)."
    )
    assert ("That is long: each run takes about " + duration(seconds) in text) is long
    assert ("fewer pairs, epochs or training images shorten it" in text) is long


def test_stopping_no_sweep_or_a_finished_one_says_so_and_changes_nothing(tmp_path):
    import gradio as gr

    from core.jobs import JobManager
    from ui.context import Studio
    from ui.temperatures import make_stop_sweep

    for cfg in temperature_grid(BASE, [2.0], [0.4, 4.0], tag="s3"):
        run = runs.create_run_dir(tmp_path / "runs", cfg.name)
        runs.write_json(run / "config.json", asdict(cfg))
        runs.set_status(run, "done")
    jobs = JobManager(tmp_path / "runs", poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        with pytest.raises(gr.Error, match="choose a sweep"):
            make_stop_sweep(ctx)(None)
        with pytest.raises(gr.Error, match="no run of the sweep s3 is queued or running"):
            make_stop_sweep(ctx)("s3")
        assert {r["status"] for r in listing.list_runs(tmp_path / "runs")} == {"done"}
    finally:
        jobs.close()


def test_a_new_sweep_is_numbered_past_every_earlier_one_and_its_runs_carry_their_time_once(tmp_path):
    """`sweep<N>`: the runs table showed sweep20261205-094952-T2-t4-20261205-094952, the time twice."""
    from core import config
    from core.sweep import list_sweeps

    def make(tag, t_targets=(4.0,)):
        cfgs = temperature_grid(BASE, list(t_targets), [0.4], tag=tag)
        return [runs.Run.create(tmp_path, cfg.name, config.to_record(cfg)).path for cfg in cfgs]

    assert new_tag(tmp_path / "absent") == new_tag(tmp_path) == "sweep1"
    made = make("sweep1", (2.0, 4.0))
    assert all(re.fullmatch(r"sweep1-T[24]-t0\.4-\d{8}-\d{6}(_\d+)?", p.name) for p in made), made
    assert new_tag(tmp_path) == "sweep2"
    make("sweep9")
    make("sweep20261126-101530")  # a sweep named by its date and time, as before
    runs.Run.create(tmp_path, "synthetic-tss-kd", config.to_record(BASE))  # a run of its own
    assert new_tag(tmp_path) == "sweep10"  # past the highest, not the date read as a number (20261127)
    for p in made:
        runs.Run(p).delete()
    assert new_tag(tmp_path) == "sweep10"  # sweep1's runs gone: 9 is still the highest
    assert sorted(s["sweep"] for s in list_sweeps(tmp_path)) == ["sweep20261126-101530", "sweep9"]  # both read
    t_targets, t_nontargets, _, rows = grid_results(tmp_path, "sweep9")
    assert (t_targets, t_nontargets, len(rows)) == ([4.0], [0.4], 1)


@pytest.mark.slow
def test_the_temperature_study_writes_its_grid(tmp_path):
    stem = tmp_path / "temps"
    argv = ["--t-targets", "2,4", "--t-nontargets", "0.4", "--epochs", "1", "--train", "32", "--image-size", "16"]
    argv += ["--kd-scaling", "paper", "--kd-warmup", "0"]
    assert temperature_bench.main([*argv, "--device", "cpu", "--out", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert "paper scaling, KD warm-up 0 epochs" in result["budget"] and "grid in one process" in result["budget"]
    assert result["t_targets"] == [2.0, 4.0] and result["t_nontargets"] == [0.4]
    assert all(0 <= row[0] <= 1 for row in result["test_acc"])
    assert "| 4 |" in stem.with_suffix(".md").read_text()
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_the_temperature_study_refuses_a_bad_grid_before_training(tmp_path):
    with pytest.raises(SystemExit, match="positive"):
        temperature_bench.main(["--t-nontargets", "0", "--out", str(tmp_path / "t")])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_sweep_bench_times_every_way(tmp_path):
    out = tmp_path / "sweep.json"
    argv = ["--epochs", "1", "--train", "32", "--image-size", "16", "--runs-per-device", "2", "--device", "cpu"]
    assert sweep_bench.main([*argv, "--t-nontargets", "0.4", "--amp", "off", "--out", str(out)]) == 0  # 2 runs each
    result = json.loads(out.read_text())
    assert result["amp"] == "off" and all(result[way]["autocast"] == [None] for way in ("sequential", "grid"))
    assert result["sequential"]["runs_per_device"] == 1 and result["concurrent"]["runs_per_device"] == 2
    assert result["grid"]["one_process"] and not result["sequential"]["one_process"]
    for way in ("sequential", "concurrent", "grid"):
        assert result[way]["training_images"] == 2 * 32
        assert result[way]["aggregate_images_per_s"] == pytest.approx(2 * 32 / result[way]["wall_s"])
        assert len(result[way]["per_run_images_per_s"]) == 2
        assert 0 < result[way]["training_steps_s"] < result[way]["wall_s"]
        assert result[way]["rest_s"] == pytest.approx(result[way]["wall_s"] - result[way]["training_steps_s"])
    assert result["sequential"]["speedup_bound"] == pytest.approx(
        result["sequential"]["wall_s"] / result["sequential"]["training_steps_s"]
    )
    assert result["grid"]["speedup"] == pytest.approx(
        result["grid"]["aggregate_images_per_s"] / result["sequential"]["aggregate_images_per_s"]
    )


@pytest.mark.slow
def test_the_temperatures_tab_queues_a_sweep_and_fills_its_heatmap(tmp_path):
    import gradio as gr

    from core.jobs import JobManager
    from ui.context import Studio
    from ui.temperatures import make_sweep, sweep_heatmap

    jobs = JobManager(tmp_path / "runs", per_device=2, poll_s=0.2)
    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=jobs)
    try:
        with pytest.raises(gr.Error, match="positive"):
            make_sweep(ctx)("4", "0, 0.4", 1, "cpu", 16)
        assert not list((tmp_path / "runs").iterdir())  # a bad grid queues nothing
        with pytest.raises(gr.Error, match="at least one training image"):
            make_sweep(ctx)("2, 4", "0.4", 1, "cpu", 16, "paper", 3, 0)
        assert not list((tmp_path / "runs").iterdir())  # nor a sweep without images
        with pytest.raises(gr.Error, match="batch size must be at least 2"):
            make_sweep(ctx)("2, 4", "0.4", 1, "cpu", 16, "paper", 3, 96, 1)
        assert not list((tmp_path / "runs").iterdir())  # nor one whose batch cannot be normalised
        tag = make_sweep(ctx)("2, 4", "0.4", 1, "cpu", 16, "paper", 3, 96)
        queued = sorted((tmp_path / "runs").iterdir())
        from ui.temperatures import sweep_view

        assert sweep_view(ctx, tag)[4]["interactive"] is True  # queued or running: it can be stopped
        assert sweep_view(ctx, None)[4]["interactive"] is False  # no sweep picked: nothing to stop
        configs = [runs.read_json(p / "config.json") for p in queued]
        assert [c["name"] for c in configs] == [f"{tag}-T2-t0.4", f"{tag}-T4-t0.4"]
        assert {(c["kd_scaling"], c["kd_warmup"]) for c in configs} == {("paper", 3)}  # the sweep's choice
        assert {c["data"]["synthetic_train"] for c in configs} == {96}
        assert {c["batch_size"] for c in configs} == {QUICK["batch_size"]}  # short runs learn at the quick batch
        assert {(c["optimizer"], c["lr"]) for c in configs} == {(QUICK["optimizer"], QUICK["lr"])}  # and optimizer
        assert set(jobs.wait(queued, timeout=240).values()) == {"done"}
        statuses = [runs.Run(p).status() for p in queued]  # trained as one grid, in one process
        assert len({s["pid"] for s in statuses}) == 1 and statuses[0]["grid"] == [p.name for p in queued]
        fig, text = sweep_heatmap(ctx, tag)
        assert text == "2 of 2 runs done" and fig is not None
        # a sweep is an object of its own: listed by name, reopened from its run folders
        from core.sweep import list_sweeps

        assert list_sweeps(ctx.runs_dir) == [{"sweep": tag, "runs": 2, "done": 2, "running": 0, "queued": 0}]
        fig, text, table, seen, stop = sweep_view(ctx, tag)
        assert text == "2 of 2 runs done" and stop["interactive"] is False  # all done: nothing left to stop
        assert sorted(tuple(row[:4]) for row in table) == sorted(
            (p.name, "done", t, 0.4) for p, t in zip(queued, (2, 4), strict=True)
        )
        assert sweep_view(ctx, tag, seen)[0].__class__.__name__ != "Figure"  # unchanged: nothing redrawn
    finally:
        jobs.close()


BENCH_WITH_A_LONG_RUN = """
import sys
from bench import job_manager
from core.config import DataConfig, TrainConfig

runs_dir = sys.argv[1]
data = DataConfig(image_size=16, synthetic_train=64, synthetic_val=16, synthetic_test=16)
with job_manager(runs_dir, per_device=1) as manager:
    run = manager.submit(TrainConfig(data=data, epochs=10_000, batch_size=16, runs_dir=runs_dir, device="cpu"))
    manager.wait([run])
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_benchmark_ended_by_its_timeout_stops_the_runs_it_started(tmp_path, sig):
    """`timeout` (each step of bench/gpu_session.sh runs under one) ends a benchmark with SIGTERM; its trainers,
    in a process group of their own, trained on into the next step's measurement. Ctrl-C stopped them before."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from core import process

    root = Path(__file__).resolve().parents[1]
    runs_dir = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(root)}
    bench = subprocess.Popen([sys.executable, "-c", BENCH_WITH_A_LONG_RUN, str(runs_dir)], cwd=root, env=env)
    try:
        deadline, status = time.monotonic() + 120, {}
        while time.monotonic() < deadline and not (status.get("status") == "running" and status.get("epoch")):
            time.sleep(0.5)  # until its trainer has trained an epoch
            folders = list(runs_dir.iterdir()) if runs_dir.is_dir() else []
            status = runs.Run(folders[0]).status() if folders else {}
        assert status.get("status") == "running" and process.alive(status["pid"]), status
        bench.send_signal(getattr(signal, sig))
        assert bench.wait(timeout=120) != 0
        deadline = time.monotonic() + 60  # the trainer stops after its current step
        while time.monotonic() < deadline and process.alive(status["pid"]):
            time.sleep(0.5)
        assert not process.alive(status["pid"])
        assert runs.Run(folders[0]).status()["status"] == "stopped"  # and resumes from where it stopped
    finally:
        bench.kill()
        if status.get("pid") and process.alive(status["pid"]):
            os.killpg(status["pid"], signal.SIGKILL)
