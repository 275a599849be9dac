"""A temperature grid trained in one process (core.grid): each grid point is the run it would be alone."""

import json
from dataclasses import replace

import pytest
from safetensors.torch import load_file

from core import config, runs
from core.data import DataConfig
from core.engine import StopFlag
from core.errors import StudioError
from core.grid import RunStop, check_grid, load_grid, main, train_grid
from core.sweep import temperature_grid
from core.train import TrainConfig, run_training

BASE = TrainConfig(
    data=DataConfig(image_size=16, synthetic_train=64, synthetic_val=32, synthetic_test=32),
    epochs=2,
    batch_size=16,
    device="cpu",
)
TIMING = {"seconds", "images_per_s"}


def prepare(runs_dir, cfgs):
    """Run folders as the job manager makes them: config written, status queued, not trained."""
    paths = []
    for cfg in cfgs:
        run = runs.Run.create(runs_dir, cfg.name, config.to_record(cfg))
        runs.set_status(run.path, "queued", epoch=0, epochs=cfg.epochs, device="cpu")
        paths.append(run.path)
    return paths


def rows(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_metrics(run)]


@pytest.mark.slow  # several runs, trained to the end
def test_each_grid_point_is_bit_identical_to_the_same_run_trained_alone(tmp_path):
    cfgs = temperature_grid(BASE, [2.0, 4.0], [0.4, 4.0], tag="g")
    paths = prepare(tmp_path / "grid", cfgs)
    ended = train_grid(load_grid(paths))
    assert ended == {p.name: "done" for p in paths}
    pids = {runs.Run(p).status()["pid"] for p in paths}
    assert len(pids) == 1  # one process for the whole grid
    for i in (0, 3):  # the first and the last point, each trained alone
        alone = run_training(replace(cfgs[i], runs_dir=str(tmp_path / f"alone{i}"), name="alone"))
        grid_weights, alone_weights = load_file(paths[i] / "model.safetensors"), load_file(alone / "model.safetensors")
        assert grid_weights.keys() == alone_weights.keys()
        for k in grid_weights:
            assert grid_weights[k].equal(alone_weights[k]), k
        assert rows(paths[i]) == rows(alone)
        grid_meta, alone_meta = runs.Run(paths[i]).model_meta(), runs.Run(alone).model_meta()
        assert grid_meta["metrics"] == alone_meta["metrics"] and grid_meta["ood"] == alone_meta["ood"]
    # different temperatures give different models: the grid did not train one model four times
    a, b = load_file(paths[0] / "model.safetensors"), load_file(paths[3] / "model.safetensors")
    assert not all(a[k].equal(b[k]) for k in a)
    for p in paths:  # ordinary run folders: the Runs tab, the report and Diagnose read them as any other
        status = runs.Run(p).status()
        assert status["status"] == "done" and status["grid"] == [q.name for q in paths]
        assert status["test_acc"] is not None and (p / "train.log").read_text().count("epoch 2/2") == 1
        assert "with 3 other run(s) of its grid" in (p / "train.log").read_text()
    # the data loaded once, then each run's model, test and saving: one share of that time on each
    shares = {runs.Run(p).status()["outside_epochs_s"] for p in paths}
    assert len(shares) == 1 and shares.pop() > 0


class StopAfter(StopFlag):
    """A stop requested after `n` looks at it, as SIGTERM would arrive in the middle of a grid."""

    def __init__(self, n):
        super().__init__()
        self.left = n

    @property
    def requested(self):
        self.left -= 1
        return self.left < 0

    @requested.setter
    def requested(self, value):
        pass


@pytest.mark.slow  # several runs, trained to the end
def test_a_stopped_grid_leaves_each_run_stopped_and_resumable_alone(tmp_path):
    cfgs = temperature_grid(BASE, [2.0, 4.0], [0.4], tag="s")
    paths = prepare(tmp_path, cfgs)
    # 4 steps of the first run's first epoch, a look between the runs, then the second run's first step
    ended = train_grid(load_grid(paths), stop=StopAfter(6))
    assert ended == {p.name: "stopped" for p in paths}
    assert [len(runs.read_metrics(p)) for p in paths] == [1, 0]
    assert (paths[1] / "last.safetensors").is_file()  # saved in the middle of its first epoch
    for p in paths:
        assert runs.Run(p).status()["status"] == "stopped"
        run_training(replace(BASE, device="cpu"), resume=str(p))
        assert runs.Run(p).status()["status"] == "done" and len(runs.read_metrics(p)) == 2


def test_a_runs_stop_flag_answers_its_own_request_and_the_grids_signal(tmp_path):
    a, b = prepare(tmp_path, temperature_grid(BASE, [2.0, 4.0], [0.4], tag="f"))
    grid = StopFlag()
    flag_a, flag_b = RunStop(grid, a, every_s=0), RunStop(grid, b, every_s=0)
    assert not flag_a.requested and not flag_b.requested
    runs.Run(b).request_stop()
    assert flag_b.requested and not flag_a.requested  # only the run asked
    runs.Run(b).clear_stop_request()
    assert not runs.Run(b).stop_requested()
    grid.requested = True  # SIGTERM or Ctrl-C to the grid's process
    assert flag_a.requested


@pytest.mark.slow  # several runs, trained to the end
def test_a_run_asked_to_stop_alone_stops_and_the_others_train_on(tmp_path):
    paths = prepare(tmp_path, temperature_grid(BASE, [2.0, 4.0], [0.4], tag="a"))
    runs.Run(paths[1]).request_stop()  # before its first step: it stops after that step
    ended = train_grid(load_grid(paths), stop=StopFlag())
    assert ended == {paths[0].name: "done", paths[1].name: "stopped"}
    assert len(runs.read_metrics(paths[0])) == 2 and runs.read_metrics(paths[1]) == []
    stopped = runs.Run(paths[1])
    assert stopped.status()["status"] == "stopped" and stopped.last_path.is_file() and not stopped.stop_requested()
    run_training(replace(BASE, device="cpu"), resume=str(paths[1]))
    assert stopped.status()["status"] == "done" and len(runs.read_metrics(paths[1])) == 2


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epochs": 3}, "epochs"),
        ({"lr": 0.1}, "lr"),
        ({"seed": 1}, "seed"),
        ({"method": "ce"}, "method"),
        ({"data": replace(BASE.data, image_size=20)}, "data"),
    ],
)
def test_runs_that_differ_in_more_than_temperatures_are_refused_before_training(tmp_path, change, named):
    cfgs = temperature_grid(BASE, [2.0], [0.4, 4.0], tag="bad")
    cfgs[1] = replace(cfgs[1], **change)
    with pytest.raises(StudioError, match=f"differ only in their temperatures.*{named}"):
        check_grid(cfgs)
    paths = prepare(tmp_path, cfgs)
    assert main(["--prepared", *map(str, paths)]) == 2
    assert all(runs.Run(p).status()["status"] == "queued" and not runs.read_metrics(p) for p in paths)


def test_the_command_line_trains_a_grid_and_refuses_what_is_not_a_prepared_run(tmp_path, capsys):
    paths = prepare(tmp_path, temperature_grid(replace(BASE, epochs=1), [2.0], [0.4, 4.0], tag="cli"))
    assert main(["--prepared", *map(str, paths), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {p.name: "done" for p in paths}
    assert main(["--prepared", str(paths[0])]) == 2  # trained already
    assert "has started before" in capsys.readouterr().err
    assert main(["--prepared", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_run_that_fails_in_a_grid_fails_alone(tmp_path, monkeypatch):
    from core.fit import Fit

    paths = prepare(tmp_path, temperature_grid(replace(BASE, epochs=1), [2.0, 4.0], [0.4], tag="f"))
    epoch = Fit.epoch

    def failing(self):
        if "-T4-" in self.run.name:
            raise RuntimeError("disk full")
        return epoch(self)

    monkeypatch.setattr(Fit, "epoch", failing)
    ended = train_grid(load_grid(paths))
    assert ended == {paths[0].name: "done", paths[1].name: "failed"}
    assert runs.Run(paths[1]).status()["error"] == "disk full" and "disk full" in (paths[1] / "train.log").read_text()
    assert runs.Run(paths[0]).status()["status"] == "done" and (paths[0] / "model.safetensors").is_file()


TINY_ARGS = ["--image-size", "16", "--synthetic-train", "64", "--synthetic-val", "32", "--synthetic-test", "32"]
TINY_ARGS += ["--epochs", "1", "--batch-size", "16", "--device", "cpu"]


def test_the_command_line_makes_a_sweep_as_the_temperatures_tab_does_and_trains_it(tmp_path, capsys):
    """`core.grid --t-targets --t-nontargets` with core.train's options: one TSS-KD run per pair with those
    options, named as the tab names a sweep's runs, listed and read as a sweep, each trained to the end."""
    from core.sweep import grid_results, list_sweeps

    argv = ["--t-targets", "2,4", "--t-nontargets", "0.4", "--lr", "0.02", *TINY_ARGS, "--runs-dir", str(tmp_path)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["sweep"] == "sweep1" and sorted(out["runs"].values()) == ["done", "done"]
    assert [s["sweep"] for s in list_sweeps(tmp_path)] == ["sweep1"]
    tts, tns, grid, found = grid_results(tmp_path, "sweep1")
    assert (tts, tns) == ([2.0, 4.0], [0.4]) and (grid > 0).all()
    for row in found:
        cfg = runs.Run(tmp_path / row["run"]).config()
        assert (cfg["method"], cfg["lr"], cfg["epochs"], cfg["data"]["image_size"]) == ("tss-kd", 0.02, 1, 16)
        assert len(rows(tmp_path / row["run"])) == 1 and (tmp_path / row["run"] / "model.safetensors").is_file()
    # the next sweep takes the next name, as the tab's would
    assert main(["--t-targets", "2", "--t-nontargets", "0.4", *TINY_ARGS, "--runs-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sweep"] == "sweep2"
    assert [r["status"] for r in grid_results(tmp_path, "sweep2")[3]] == ["done"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--t-targets", "2", "--t-nontargets", "0.4", "--method", "ce"], "leave out --method"),
        (["--t-targets", "2", "--t-nontargets", "0.4", "--t-target", "3"], "leave out --t-target"),
        (["--t-targets", "2", "--t-nontargets", "0.4", "--name", "mine"], "leave out --name"),
        (["--t-targets", "2,-1", "--t-nontargets", "0.4"], "positive numbers, not -1"),
        (["--t-targets", ",".join(map(str, range(1, 7))), "--t-nontargets", "1,2,3,4,5"], "at most 25 runs"),
        (["--t-targets", "2", "--t-nontargets", "0.4", "--epochs", "0"], "at least one epoch"),
        (["--t-targets", "2", "--t-nontargets", "0.4", "--dataset", "medmnist", "--data-path", "/no.npz"], "no such"),
        (["--t-targets", "2", "--t-nontargets", "0.4", "--device", "cuda:7"], "cuda"),
        (["--t-targets", "2", "--t-nontargets", "0.4", "--device", "cpu", "--cuda-graphs"], "CUDA graphs need a CUDA"),
    ],
)
def test_a_sweep_the_command_line_cannot_train_is_refused_and_makes_no_run(tmp_path, capsys, argv, message):
    runs_dir = tmp_path / "runs"
    tiny = [a for a in TINY_ARGS if a not in ("--device", "cpu")] if "--device" in argv else TINY_ARGS
    assert main([*tiny, *argv, "--runs-dir", str(runs_dir)]) == 2
    assert message in capsys.readouterr().err
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize(
    ("text", "values"),
    [("2,4,8", [2.0, 4.0, 8.0]), (" 2, 4 ", [2.0, 4.0]), ("2;4", [2.0, 4.0]), ("0.4,", [0.4]), ("1e1", [10.0])],
)
def test_the_command_line_reads_temperatures_as_the_temperatures_tab_does(text, values):
    from core.grid import sweep_parser
    from ui.temperatures import sweep_values

    args = sweep_parser().parse_args(["--t-targets", text, "--t-nontargets", text])
    assert args.t_targets == args.t_nontargets == values
    assert sweep_values(text, text) == (values, values)


@pytest.mark.parametrize(
    ("text", "message"),
    # "2 4" was read as 24 by the command line, which took the spaces out before it split at the commas
    [("2 4", "write numbers separated by commas"), ("2,x", "not '2,x'"), (" , ", "at least one number")],
)
def test_temperatures_that_are_not_numbers_are_refused_alike(tmp_path, capsys, text, message):
    from ui.temperatures import sweep_values

    with pytest.raises(SystemExit) as e:
        main(["--t-targets", text, "--t-nontargets", "1", "--runs-dir", str(tmp_path / "runs")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(StudioError, match=message):
        sweep_values(text, "1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["--t-targets", "2,x", "--t-nontargets", "1"], ["--t-nontargets", "1"]])
def test_temperatures_the_command_line_cannot_read_are_a_usage_error(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--runs-dir", str(tmp_path / "runs")])
    assert e.value.code == 2 and "--t-targets" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
