"""Concurrent diagnoses share batched passes (core.serving), and each caller still gets its own answer."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import StudioError
from core.serving import Batcher

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("demo-*.png"))


def call_together(fn, args_list):
    """Call `fn(*args)` for each args from its own thread, all released at once; results in order."""
    start = threading.Barrier(len(args_list))
    out: list = [None] * len(args_list)

    def worker(i, args):
        start.wait()
        try:
            out[i] = fn(*args)
        except Exception as e:  # noqa: BLE001 - returned to the test
            out[i] = e

    threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


class SlowWork:
    """Doubles numbers, slowly enough that callers pile up behind a running batch; records each batch."""

    def __init__(self):
        self.batches: list[tuple[list, object]] = []

    def __call__(self, items, key):
        self.batches.append((list(items), key))
        time.sleep(0.05)
        if "boom" in items:
            raise ValueError("boom in this batch")
        return [2 * x for x in items]


def test_each_caller_gets_its_own_results_from_shared_batches():
    work = SlowWork()
    batcher = Batcher(work, max_batch=16)
    calls = [([i, 100 + i],) for i in range(12)]
    out = call_together(batcher.run, calls)
    assert out == [[2 * i, 200 + 2 * i] for i in range(12)]
    assert len(work.batches) < 12 and batcher.largest > 2  # callers arriving during a batch went together
    assert sorted(x for items, _ in work.batches for x in items) == sorted(x for (items,) in calls for x in items)


def test_a_lone_caller_runs_at_once_and_an_empty_call_runs_nothing():
    work = SlowWork()
    batcher = Batcher(work)
    assert batcher.run([3]) == [6] and batcher.run([]) == []
    assert len(work.batches) == 1


def test_batches_never_mix_keys_and_respect_the_size_limit():
    work = SlowWork()
    batcher = Batcher(work, max_batch=4)
    big = [101, 103, 105, 107, 109, 111]  # one caller with more than a batch: never split
    calls = [([i], "gradcam" if i % 2 else "scorecam") for i in range(10)] + [(big, "gradcam")]
    out = call_together(batcher.run, calls)
    assert out[:10] == [[2 * i] for i in range(10)] and out[10] == [2 * x for x in big]
    for items, key in work.batches:  # odd numbers were sent with "gradcam", even ones with "scorecam"
        assert all((x % 2 == 1) == (key == "gradcam") for x in items)
        assert len(items) <= 4 or items == big


def test_an_error_reaches_the_callers_of_its_batch_and_the_batcher_goes_on():
    work = SlowWork()
    batcher = Batcher(work)
    with pytest.raises(ValueError, match="boom"):
        batcher.run(["boom"])
    assert batcher.run([5]) == [10]  # not stuck busy


@pytest.fixture(scope="module")
def predictor():
    from core.infer import Predictor

    return Predictor(ROOT / "assets" / "demo-model.safetensors")


def test_concurrent_diagnoses_match_one_at_a_time(predictor):
    """Eight clinicians at once get exactly what each would get alone: the batch changes nothing but speed."""
    files = [EXAMPLES[i % len(EXAMPLES)] for i in range(8)]
    alone = [predictor.diagnose(f, target=t) for f, t in zip(files, [None, "mass"] * 4, strict=True)]
    before = predictor.batcher.batches
    together = call_together(
        lambda f, t: predictor.diagnose(f, target=t), list(zip(files, [None, "mass"] * 4, strict=True))
    )
    assert predictor.batcher.batches - before < 8
    for a, b in zip(alone, together, strict=True):
        assert not isinstance(b, Exception), b
        assert a["predicted"] == b["predicted"] and a["target"] == b["target"]
        assert a["lesion_box"] == b["lesion_box"] and a["in_distribution"] == b["in_distribution"]
        for name, p in a["probabilities"].items():
            assert b["probabilities"][name] == pytest.approx(p, abs=1e-4)
        np.testing.assert_allclose(a["cam"], b["cam"], atol=1e-3)


def test_each_caller_draws_its_own_maps_while_the_model_serves_the_next_batch(predictor, monkeypatch):
    """Only the model's pass is batched: overlays and boxes are drawn in each caller's own thread, so the
    drawing of one batch overlaps the next batch's pass instead of holding the model."""
    drawn_in, callers = [], []
    draw = predictor._diagnosis

    def spy(*args):
        drawn_in.append(threading.get_ident())
        return draw(*args)

    monkeypatch.setattr(predictor, "_diagnosis", spy)

    def diagnose(f):
        callers.append(threading.get_ident())
        return predictor.diagnose(f)

    before = predictor.batcher.batches
    out = call_together(diagnose, [(EXAMPLES[i % len(EXAMPLES)],) for i in range(6)])
    assert all(isinstance(r, dict) and r["predicted"] for r in out), out
    assert predictor.batcher.batches - before < 6
    assert sorted(drawn_in) == sorted(callers) and len(set(drawn_in)) == 6


def test_a_bad_request_fails_alone_and_never_sinks_the_others(predictor):
    calls = [(EXAMPLES[0], "mass"), (EXAMPLES[1], "tumour"), (EXAMPLES[2], None)]
    out = call_together(lambda f, t: predictor.diagnose(f, target=t), calls)
    assert isinstance(out[1], StudioError) and "unknown class 'tumour'" in str(out[1])
    assert out[0]["target"] == "mass" and out[2]["predicted"]


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam++", "layercam", "eigencam", pytest.param("scorecam", marks=pytest.mark.slow)]
)
def test_one_pass_maps_and_logits_equal_the_full_computation(predictor, method):
    """The lesion map's own forward pass gives the answer, and its backward stops at the mapped layer: the
    maps are those of the grad-cam package run the usual way, and the logits those of a plain forward."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from core.cam import CAM_METHODS, cams_and_logits
    from core.imageio import read_scan
    from core.model import cam_layer

    model = predictor.model
    n = 2 if method == "scorecam" else 4  # ScoreCAM runs the model once per channel: two scans are enough
    x = predictor.prepare_many([read_scan(f) for f in EXAMPLES[:n]])
    if method == "scorecam":  # and at half size (layer4 4 x 4): 2,048 forward passes at 64 px took 3 minutes
        x = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="area")
    with torch.no_grad():
        plain = model(x)
    targets = [None, 3, None, 0][:n]
    maps, logits, chosen = cams_and_logits(model, x, targets, method=method, amp="off")  # as the package does
    expected = [int(plain[i].argmax()) if t is None else t for i, t in enumerate(targets)]
    assert chosen == expected
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # restored after the short backward
    assert all(p.grad is None for p in model.parameters())  # no weight gradient was computed
    with CAM_METHODS[method](model=model, target_layers=[cam_layer(model)]) as cam:
        cam.batch_size = 32
        reference = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in expected])
    np.testing.assert_allclose(maps, np.clip(np.nan_to_num(reference), 0, 1), atol=1e-5)
    model.zero_grad(set_to_none=True)  # the package's own run left weight gradients on the shared model


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["off", "bf16", "auto"])
def test_scorecams_masked_passes_run_in_the_precision_asked_and_the_answer_in_float32(predictor, amp):
    """ScoreCAM runs the model once per channel of the mapped layer; those passes may run in bf16 (4x faster
    on an AMX CPU), while the scan's own pass, whose logits Diagnose reports, stays float32, and the map stays
    that of the float32 passes but for bf16's rounding."""
    import torch

    from core.cam import cams_and_logits
    from core.device import amp_dtype
    from core.imageio import read_scan

    model = predictor.model
    x = predictor.prepare_many([read_scan(EXAMPLES[0])])
    x = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="area")  # layer4 4 x 4: 512 passes of 32 px
    with torch.no_grad():
        plain = model(x)
    seen = []
    hook = model.backbone.conv1.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        maps, logits, _ = cams_and_logits(model, x, [None], method="scorecam", amp=amp)
    finally:
        hook.remove()
    masked = amp_dtype(x.device, amp) or torch.float32
    # a pass for the predicted class and the scan's own pass, then the 512 masked scans in batches of 32
    assert seen[:2] == [torch.float32] * 2 and seen[2:] == [masked] * (512 // 32), seen
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    exact = cams_and_logits(model, x, [None], method="scorecam", amp="off")[0]
    np.testing.assert_allclose(maps, exact, atol=1e-6 if masked == torch.float32 else 0.05)
    assert np.corrcoef(maps.ravel(), exact.ravel())[0, 1] > 0.99


def test_images_and_download_folders_are_written_once_and_swept_later(tmp_path):
    from PIL import Image

    from ui.files import ImageFiles

    files = ImageFiles(keep_s=0)
    image = np.zeros((8, 12, 3), np.uint8)
    image[2:4, 3:5] = 255
    a, b = files.png(image), files.png(image)
    report = files.new_folder() / "run-report.html"
    report.write_text("report")
    assert a != b and Path(a).parent == files.folder and Path(a).suffix == ".png"
    with Image.open(a) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), image)
        assert set(im.info) <= {"dpi", "gamma"}  # no text chunks: nothing but pixels
    files._swept -= 61  # a minute later, files older than keep_s go
    c = files.png(image)
    assert not Path(a).exists() and not Path(b).exists() and Path(c).exists()
    assert not report.parent.exists()  # a report's or download's folder goes the same way
    folder = files.folder
    del files
    import gc

    gc.collect()
    assert not folder.exists()  # removed with the studio


def test_the_studio_queue_waits_for_work_without_spinning(tmp_path):
    """Gradio's queue polls every millisecond when idle; the studio makes it every 20 ms (about 2% of a core
    instead of 7% for an idle studio, bench/watch_cost.py)."""
    from app import QUEUE_POLL_S, build_app, calm_queue
    from core.jobs import JobManager
    from ui.context import Studio

    ctx = Studio(data_root=tmp_path, runs_dir=tmp_path / "runs", jobs=JobManager(tmp_path / "runs"))
    try:
        app = build_app(ctx)
        app.queue(default_concurrency_limit=4)
        assert app._queue.sleep_when_free < QUEUE_POLL_S  # gradio's own, so the test would see a change
        calm_queue(app)
        assert app._queue.sleep_when_free == QUEUE_POLL_S == 0.02
    finally:
        ctx.jobs.close()


def test_a_large_upload_is_diagnosed_in_passes_of_a_bounded_size_with_the_same_answers(predictor, monkeypatch):
    """A pass keeps every scan's activations until its maps are drawn: a large upload goes through the model
    in passes of `PASS_SCANS`, and each scan's answer, trust and map are those one pass would give."""
    from core import infer

    files = [EXAMPLES[i % len(EXAMPLES)] for i in range(10)]
    one_pass = predictor.diagnose_files(files)
    real, passes = infer.cams_and_logits, []

    def counted(model, x, *args, **kwargs):
        passes.append(len(x))
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(infer, "PASS_SCANS", 4)
    monkeypatch.setattr(infer, "cams_and_logits", counted)
    in_passes = predictor.diagnose_files(files)
    assert passes == [4, 4, 2]
    for a, b in zip(one_pass, in_passes, strict=True):  # the later passes' scans get their own OOD features
        assert (a["predicted"], a["in_distribution"], a["lesion_box"]) == (
            b["predicted"],
            b["in_distribution"],
            b["lesion_box"],
        )
        assert b["ood_score"] == pytest.approx(a["ood_score"], rel=1e-4)
        assert list(b["probabilities"].values()) == pytest.approx(list(a["probabilities"].values()), abs=1e-5)
        np.testing.assert_allclose(a["cam"], b["cam"], atol=1e-4)


@pytest.mark.parametrize("way", ["diagnose_files", "predict_files"])
def test_many_files_are_read_a_pass_at_a_time_and_a_bad_file_keeps_its_place(predictor, monkeypatch, tmp_path, way):
    """Full-size scans never pile up: each pass's files are read just before it, not the whole upload first;
    each answer is the one the file gets alone."""
    from core import infer

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    files = [EXAMPLES[i % len(EXAMPLES)] for i in range(9)]
    files.insert(5, bad)
    alone = [predictor.predict(f) for f in files if f != bad]
    events: list[str] = []
    read, forward = infer.read_scan, infer.Predictor.prepare_many

    def reading(path):
        events.append("read")
        return read(path)

    def passing(self, scans):
        events.append(f"pass {len(scans)}")
        return forward(self, scans)

    monkeypatch.setattr(infer, "PASS_SCANS", 4)
    monkeypatch.setattr(infer, "read_scan", reading)
    monkeypatch.setattr(infer.Predictor, "prepare_many", passing)
    found = getattr(predictor, way)(files)
    assert events == ["read"] * 4 + ["pass 4"] + ["read"] * 4 + ["pass 3"] + ["read"] * 2 + ["pass 2"]
    assert ["error" in r for r in found] == [i == 5 for i in range(10)] and "bad.png" in found[5]["error"]
    answered = [r for r in found if "error" not in r]
    assert [r["predicted"] for r in answered] == [r["predicted"] for r in alone]
    for r, a in zip(answered, alone, strict=True):
        assert list(r["probabilities"].values()) == pytest.approx(list(a["probabilities"].values()), abs=1e-5)
        assert (r["in_distribution"], r["scan"]) == (a["in_distribution"], a["scan"])
    if way == "diagnose_files":
        with pytest.raises(StudioError, match="unknown lesion-map method"):  # refused before any file is read
            predictor.diagnose_files(files, method="cam9000")
        assert events.count("read") == 10


@pytest.mark.parametrize("side", [0, 1500], ids=["demo scans", "1500 px scans"])
def test_the_memory_bench_diagnoses_one_upload_each_way_with_the_same_answers(tmp_path, side):
    from bench import diagnose_memory

    out = tmp_path / "memory.json"
    assert diagnose_memory.main(["--scans", "40" if not side else "6", "--side", str(side), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["same_answers"] is True and result["model"] == "demo"
    before, in_colour, now = result["ways"].values()
    assert before["pass_scans"] == "all" and in_colour["pass_scans"] == now["pass_scans"] == 32
    ways = (before, in_colour, now)
    assert all(w["seconds"] > 0 and w["peak_above_warm_mb"] >= 0 and w["warm_mb"] > 100 for w in ways)
    # each answer's overlay is in colour at the scan's shown size; the greyscale scan beside it was kept whole in
    # colour, then at the overlay's size in colour, now at that size in one channel
    n, (h, w) = (6, (1024, 819)) if side else (40, (64, 64))
    overlay = h * w * 3 / 2**20
    if side:
        assert result["scan_size"] == "1200 x 1500 px"
        assert before["answer_images_mb"] == pytest.approx(n * (1500 * 1200 * 3 / 2**20 + overlay), abs=0.1)
    else:  # 64 px scans are shown as they are
        assert before["answer_images_mb"] == in_colour["answer_images_mb"]
    assert in_colour["answer_images_mb"] == pytest.approx(n * 2 * overlay, abs=0.1)
    assert now["answer_images_mb"] == pytest.approx(n * (overlay + h * w / 2**20), abs=0.1)
