"""The time a run will take, told before Start from the speed earlier runs measured on the same device."""

import pytest

from core import estimate, runs
from core.config import DataConfig, TrainConfig


def fake_run(
    root, *, method="tss-kd", image_size=32, batch=128, device="cpu", speeds=(100.0, 120.0, 110.0), timed=None
):
    """A finished run's records; `timed` = (training images an epoch, seconds an epoch took beyond training
    them, seconds outside the epochs) as a trainer records them now (earlier runs have no such figures)."""
    cfg = TrainConfig(data=DataConfig(image_size=image_size), method=method, batch_size=batch)
    from core.config import to_record

    run = runs.Run.create(root, "r", to_record(cfg.resolved()))
    run.set_status("done", device=device, **({"outside_epochs_s": timed[2]} if timed else {}))
    for i, s in enumerate(speeds):
        row = {"epoch": i + 1, "images_per_s": s}
        if timed:
            row |= {"train_images": timed[0], "seconds": timed[0] / s + timed[1]}
        runs.append_metrics(run.path, row)
    return run


def test_no_estimate_before_anything_was_measured_on_this_device(tmp_path):
    assert estimate.estimate_seconds(tmp_path, TrainConfig(), "cpu") is None
    fake_run(tmp_path, device="cuda:0")
    assert estimate.estimate_seconds(tmp_path, TrainConfig(), "cpu") is None


def test_the_estimate_is_the_speed_comparable_runs_keep_when_alone(tmp_path):
    fake_run(tmp_path)  # 100, 120, 110 images/s: their 80th percentile is 116
    fake_run(tmp_path, image_size=64, speeds=(5.0,))  # another size: not comparable
    fake_run(tmp_path, method="ce", speeds=(1000.0,))  # one pass a step instead of two: not comparable
    found = estimate.estimate_seconds(tmp_path, TrainConfig(epochs=10), "cpu")
    expected = {"seconds": 10 * 5000 / 116.0, "images_per_s": 116.0, "epochs_measured": 3, "train_images": 5000}
    assert found == pytest.approx(expected)
    kd = estimate.estimate_seconds(tmp_path, TrainConfig(method="kd", epochs=1), "cpu")
    assert kd["images_per_s"] == pytest.approx(116.0)  # the same kind of step as TSS-KD: two views, two passes


def test_epochs_slowed_by_work_beside_them_do_not_drag_the_estimate_down(tmp_path):
    """The median went by them: after a sweep trained beside a test run on a 2-core Xeon (9-53 images/s), the
    Temperatures tab foretold 28 images/s where the machine does 47 alone."""
    fake_run(tmp_path, speeds=(40.0, 47.0, 46.0, 48.0, 47.0))  # alone, its first epoch slower
    fake_run(tmp_path, speeds=(9.0, 21.0, 14.0, 28.0, 30.0, 47.0, 25.0, 18.0, 22.0, 12.0, 19.0))  # beside tests
    found = estimate.estimate_seconds(tmp_path, TrainConfig(epochs=10), "cpu")
    assert 40.0 <= found["images_per_s"] <= 48.0 and found["epochs_measured"] == 16


def test_the_estimate_goes_by_the_latest_comparable_runs(tmp_path):
    """A run folder measured on another machine (copied, or the studio's runs kept across an upgrade) ages out."""
    import os

    old = [fake_run(tmp_path, speeds=(500.0,) * 5) for _ in range(3)]  # a faster machine, long ago
    for i, run in enumerate(old):
        os.utime(run.path / runs.METRICS, (1_000_000 + i, 1_000_000 + i))
    for _ in range(estimate.RECENT_RUNS):
        fake_run(tmp_path, speeds=(50.0, 52.0))
    found = estimate.estimate_seconds(tmp_path, TrainConfig(epochs=1), "cpu")
    assert found["images_per_s"] == pytest.approx(52.0) and found["epochs_measured"] == 2 * estimate.RECENT_RUNS


def test_the_estimate_counts_validation_saving_and_the_time_outside_the_epochs_as_measured(tmp_path):
    """Before, only the training images counted: a 4-run sweep of 5 short epochs on a 2-core Xeon was
    foretold 2 min once measured and took 3.1 (testing, calibrating and saving each run, validating and
    saving each epoch)."""
    fake_run(tmp_path, speeds=(100.0, 120.0), timed=(1000, 1.5, 12.0))
    fake_run(tmp_path, speeds=(110.0,), timed=(2000, 2.5, 20.0))
    fake_run(tmp_path, speeds=(90.0,))  # an earlier run: its speed counts, its missing figures do not
    found = estimate.estimate_seconds(tmp_path, TrainConfig(epochs=10), "cpu")
    extra = 1.5  # the median of 1.5, 1.5 and 2.5 seconds an epoch; outside the epochs: the median of 12 and 20
    assert found["images_per_s"] == pytest.approx(114.0) and found["epochs_measured"] == 4  # 90 100 [110 120]
    assert found["seconds"] == pytest.approx(16.0 + 10 * (5000 / 114.0 + extra))


@pytest.mark.parametrize("planned", [5000, 3])
def test_epochs_of_less_than_a_batch_go_by_runs_as_small_only(tmp_path, planned):
    """A smoke test of 3 demo images for 100 epochs (one step of 3 images an epoch, 28 images/s on an AMX
    Xeon where batches of 128 train at 130) made the Train tab foretell the default run 4 h 25 min, not 70."""
    fake_run(tmp_path, speeds=(28.0,) * 100, timed=(3, 0.3, 2.0))  # the smoke test
    fake_run(tmp_path, speeds=(130.0, 132.0), timed=(5000, 5.0, 12.0))  # a run of full batches
    fake_run(tmp_path, speeds=(125.0,))  # an earlier run, which did not say its epochs' size: it counts
    cfg = TrainConfig(data=DataConfig(synthetic_train=planned), epochs=100)
    found = estimate.estimate_seconds(tmp_path, cfg, "cpu")
    if planned == 5000:  # the full-batch runs alone: 125, 130 and 132 images/s; 5 s an epoch besides; 12 outside
        assert found["epochs_measured"] == 3 and found["images_per_s"] == pytest.approx(131.2)
        assert found["seconds"] == pytest.approx(12.0 + 100 * (5000 / 131.2 + 5.0))
    else:  # a run as small goes by every epoch, the smoke test's included
        assert found["epochs_measured"] == 103 and found["images_per_s"] == pytest.approx(28.0)


@pytest.mark.slow  # a real run
def test_a_real_run_records_what_the_next_estimate_adds(tmp_path):
    from conftest import tiny_config

    from core.train import run_training

    cfg = tiny_config(tmp_path, epochs=2)
    run = runs.Run(run_training(cfg))
    rows, outside = run.metrics(), run.status()["outside_epochs_s"]
    assert [r["train_images"] for r in rows] == [48, 48] and outside > 0  # 48 training images at batch 16
    assert all(r["seconds"] > r["train_images"] / r["images_per_s"] for r in rows)  # validated and saved too
    found = estimate.estimate_seconds(cfg.runs_dir, cfg.resolved(), "cpu")
    extras = sorted(r["seconds"] - r["train_images"] / r["images_per_s"] for r in rows)
    slow, fast = sorted(r["images_per_s"] for r in rows)
    speed = slow + 0.8 * (fast - slow)  # the speed it keeps alone: the 80th percentile of its epochs
    assert found["seconds"] == pytest.approx(outside + 2 * (48 / speed + sum(extras) / 2))


def test_a_trainer_process_counts_its_own_start_up_as_time_outside_its_epochs():
    """A trainer launched as a process (the studio's, the command line's) counts from its process's start:
    Python's and torch's imports took 3.7 of the 11 s a quick run spent outside its epochs on a 2-core Xeon."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import time; time.sleep(1.5); import core.estimate as e; print(time.perf_counter() - e.process_started())"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 1.5 <= float(done.stdout) < 300  # the sleep and the imports before the reading, at least


def test_cuda_and_cuda_0_are_the_same_device(tmp_path):
    fake_run(tmp_path, device="cuda:0")
    assert estimate.estimate_seconds(tmp_path, TrainConfig(), "cuda")["images_per_s"] == pytest.approx(116.0)


def medmnist_file(root, *, compressed: bool):
    import numpy as np
    from helpers import write_medmnist

    path = write_medmnist(root / "m.npz", n=(37, 5, 5))
    if compressed:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        np.savez_compressed(path, **arrays)
    return path


def folder_with_splits(root):
    from test_data import make_mixed_folder

    make_mixed_folder(root / "train", per_class=6)
    make_mixed_folder(root / "val", per_class=3)
    return root


def manifest(root):
    from test_data import make_mixed_folder

    make_mixed_folder(root / "scans", per_class=9)
    scans = sorted(p for p in (root / "scans").rglob("*") if p.is_file() and p.name[0] != "." and p.suffix != ".txt")
    rows = ["path,label"] + [f"{p.relative_to(root)},{p.parent.name}" for p in scans]
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


def plain_folder(root):
    from test_data import make_mixed_folder

    make_mixed_folder(root / "scans", per_class=12)
    return root / "scans"


@pytest.mark.parametrize(
    ("dataset", "make"),
    [
        ("medmnist", lambda root: medmnist_file(root, compressed=False)),
        ("medmnist", lambda root: medmnist_file(root, compressed=True)),
        ("folder", folder_with_splits),
        ("folder", plain_folder),
        ("folder", manifest),
    ],
    ids=["npz", "npz-compressed", "folder-with-splits", "folder", "csv"],
)
def test_every_data_source_is_counted_before_it_is_loaded(tmp_path, dataset, make):
    from core.data import load_dataset

    data = DataConfig(dataset=dataset, data_path=str(make(tmp_path)), image_size=16)
    counted = estimate.train_images(data)
    fake_run(tmp_path / "runs", image_size=16)
    found = estimate.estimate_seconds(tmp_path / "runs", TrainConfig(data=data, epochs=2), "cpu")
    loaded = load_dataset(data)
    assert counted == len(loaded.train)  # a folder's split drawn per class from its listing, as loading draws it
    assert found["train_images"] == counted and found["seconds"] == pytest.approx(2 * counted / 116.0)


@pytest.mark.parametrize(
    ("dataset", "content", "message"),
    [
        ("folder", None, "no such folder or CSV manifest"),
        ("medmnist", b"not a zip", "data is not a .npz file: MedMNIST data comes as NumPy .npz archives"),
        ("medmnist", "empty-npz", "not a MedMNIST file: it lacks train_images, train_labels"),
        ("folder", "empty-dir", "no scans found"),
    ],
)
def test_data_that_cannot_be_counted_says_why(tmp_path, dataset, content, message):
    import numpy as np

    from core.errors import StudioError

    path = tmp_path / "data"
    if content == "empty-npz":
        path = tmp_path / "data.npz"
        np.savez(path, other=np.zeros(3))
    elif content == "empty-dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(StudioError, match=message):
        estimate.estimate_seconds(tmp_path, TrainConfig(data=DataConfig(dataset=dataset, data_path=str(path))), "cpu")


def test_a_cpu_with_no_run_yet_is_probed_with_real_training_steps(tmp_path):
    import torch

    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    cfg = TrainConfig(data=DataConfig(image_size=16, synthetic_train=1000), epochs=4, batch_size=8)
    found = estimate.estimate_seconds(tmp_path, cfg, "cpu", probe=True)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random state is untouched
    assert found["epochs_measured"] == 0 and 0.5 < found["images_per_s"] < 100_000
    assert found["seconds"] == pytest.approx(4 * 1000 / found["images_per_s"])
    assert estimate.probe_speed(cfg) == found["images_per_s"]  # probed once per network, size and method
    # another image size is a probe of its own (no timing is compared: a busy machine can reorder two probes)
    big = TrainConfig(data=DataConfig(image_size=32), batch_size=8)
    before = len(estimate._probed)
    assert estimate.probe_speed(big) > 0 and len(estimate._probed) == before + 1
    assert estimate.probe_speed(big) == estimate.probe_speed(big) and len(estimate._probed) == before + 1
    fake_run(tmp_path, image_size=16, batch=8, speeds=(123.0,))  # once measured, the measurement counts
    assert estimate.estimate_seconds(tmp_path, cfg, "cpu", probe=True)["images_per_s"] == 123.0


def test_a_slow_first_step_does_not_shrink_the_probes_batch(monkeypatch):
    """The first step pays one-time costs: on a studio's first start after install it took 1.16 s where the
    next took 0.15, and sizing the batch from it probed with 2 images a step and foretold 14 images/s where
    90 was right (6 h for the default run instead of 1.5)."""
    import time

    from core import engine

    make_stepper, sizes = engine.make_stepper, []

    def cold_first_step(*args, **kwargs):
        step = make_stepper(*args, **kwargs)

        def timed(index):
            if not sizes:
                time.sleep(3.0)  # the one-time costs, made plain
            sizes.append(len(index))
            return step(index)

        return timed

    monkeypatch.setattr(engine, "make_stepper", cold_first_step)
    estimate.probe_speed(TrainConfig(data=DataConfig(image_size=12), batch_size=16, method="ce", rga=False))
    assert sizes[:2] == [2, 2] and len(sizes) == 5
    assert sizes[2] == sizes[3] == sizes[4] > 2  # sized by the warm step: a 2-image step at 12 px takes < 1 s


@pytest.mark.parametrize(("batch", "step_s", "probed"), [(128, 1000.0, 128), (48, 1000.0, 48), (128, 1e-9, 2)])
def test_the_probe_steps_up_to_the_runs_batch_as_time_allows(monkeypatch, batch, step_s, probed):
    """A fast step is probed at the run's own batch, over the same 16 scans again: at most 16 images a step
    made the default run look 1.6x slower than it trained on an AMX CPU, whose bf16 tiles want large batches;
    a slow step stays small (here: the time allowed a step is all but nothing)."""
    from core import engine, synthetic

    make_stepper, sizes, rendered, render = engine.make_stepper, [], [], synthetic.render

    def recorded(*args, **kwargs):
        step = make_stepper(*args, **kwargs)

        def run(index):
            sizes.append(len(index))
            assert int(index.max()) < estimate.SCANS  # the batch takes the rendered scans again
            return step(index)

        return run

    def counted(n, **kwargs):
        rendered.append(n)
        return render(n, **kwargs)

    monkeypatch.setattr(engine, "make_stepper", recorded)
    monkeypatch.setattr(synthetic, "render", counted)
    monkeypatch.setattr(estimate, "PROBE_STEP_S", step_s)
    monkeypatch.setattr(estimate, "_probed", {})  # probed afresh, not found in the cache of another case
    estimate.probe_speed(TrainConfig(data=DataConfig(image_size=8), batch_size=batch, method="ce", rga=False))
    assert rendered == [16] and sizes == [2, 2, probed, probed, probed]


def test_two_pages_asking_at_once_share_one_probe():
    import threading

    cfg = TrainConfig(data=DataConfig(image_size=12), batch_size=4, method="kd")
    found = []
    threads = [threading.Thread(target=lambda: found.append(estimate.probe_speed(cfg))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 2 and found[0] == found[1]  # two timings would differ in their last digits


EXIT_DURING_A_PROBE = """
import sys, threading, time
from core import engine, estimate
from core.config import TrainConfig

stepping, make_stepper = threading.Event(), engine.make_stepper
def watched(*args, **kwargs):  # the probe's training steps, told apart from its imports and set-up
    step = make_stepper(*args, **kwargs)
    return lambda *a: (stepping.set(), step(*a))[1]
engine.make_stepper = watched
threading.Thread(target=estimate.probe_speed, args=(TrainConfig(),), daemon=True).start()
stepping.wait()
time.sleep(float(sys.argv[1]))  # the interpreter ends here, with the probe's steps in flight
"""


@pytest.mark.parametrize("seconds", [0.05, 0.3, 0.6])
def test_a_process_that_ends_while_a_page_load_probes_exits_cleanly(seconds):
    """A studio stopped, or a test run ending, while a page load's probe trains on a server thread: on the old
    code the interpreter stopped that daemon thread inside torch's backward pass, and the process aborted
    (exit status 134) after everything had passed."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", EXIT_DURING_A_PROBE, str(seconds)], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr


def test_gpus_are_not_probed(tmp_path):
    assert estimate.estimate_seconds(tmp_path, TrainConfig(), "cuda:0", probe=True) is None
    assert estimate.probe_at_start(tmp_path, TrainConfig(), "cuda:0") is None


def test_the_studio_probes_its_defaults_as_it_starts_so_that_the_page_finds_the_figure(tmp_path):
    cfg = TrainConfig(data=DataConfig(image_size=10), batch_size=6, method="ce")
    thread = estimate.probe_at_start(tmp_path, cfg, "cpu")
    assert thread is not None
    thread.join(timeout=120)
    key = ("resnet18", 10, "ce", True, "auto", 6, "cpu")
    assert not thread.is_alive() and estimate._probed[key] > 0  # the page's first estimate takes it from here
    found = estimate.estimate_seconds(tmp_path, cfg, "cpu", probe=True)
    assert found["images_per_s"] == estimate._probed[key] and found["epochs_measured"] == 0
    fake_run(tmp_path, method="ce", image_size=10, batch=6)  # measured: nothing left to probe
    assert estimate.probe_at_start(tmp_path, cfg, "cpu") is None


def test_the_estimate_bench_sets_the_probe_beside_a_real_run(tmp_path, capsys):
    import json

    from bench import estimate as bench

    out = tmp_path / "estimate.json"
    assert bench.main(["--settings", "resnet18:16", "--train", "64", "--batch-size", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (case,) = result["cases"]
    assert (case["arch"], case["image_size"], result["train_images"]) == ("resnet18", 16, 64)
    assert case["probe_images_per_s"] > 0 and case["run_images_per_s"] > 0
    assert case["probe_over_run"] == pytest.approx(case["probe_images_per_s"] / case["run_images_per_s"])
    assert case["foretold_train_seconds"] == pytest.approx(64 / case["probe_images_per_s"])
    with pytest.raises(SystemExit):
        bench.main(["--settings", "resnet18:big"])
    assert "give NETWORK:SIZE" in capsys.readouterr().err


@pytest.mark.slow  # five tiny runs, queued on the job manager as the studio queues them
def test_the_estimate_bench_sets_whole_runs_estimates_beside_their_wall_time(tmp_path):
    import json

    from bench import estimate as bench

    out = tmp_path / "whole.json"
    tiny = {"synthetic_train": 48, "synthetic_val": 24, "synthetic_test": 24, "image_size": 16, "batch_size": 16}
    assert bench.main(["--whole", "--run-settings", json.dumps({**tiny, "epochs": 1}), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [c["case"] for c in result["cases"]] == [
        "the same run again",
        "a 2 x 2 temperature sweep",
        "twice the epochs",
    ]
    assert [c["runs"] for c in result["cases"]] == [1, 4, 1] and result["settings"]["preset"] == "quick"
    for case in result["cases"]:
        assert case["wall_s"] > 0 and case["estimate_s"] > case["before_s"] > 0  # now with the time beyond training
        assert case["estimate_over_wall"] == pytest.approx(case["estimate_s"] / case["wall_s"])


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_a_medmnist_file_is_counted_from_any_npy_header_version(tmp_path, version):
    import zipfile

    import numpy as np

    from core.medmnist import train_count

    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as z, z.open("train_labels.npy", "w") as f:
        np.lib.format.write_array(f, np.zeros((41, 1), np.int64), version=version)
    assert train_count(path) == 41
