"""bench/throughput.py end to end on a tiny setting: both pipelines measured in one run, JSON written."""

import json

import pytest
import torch

from bench import throughput
from core.device import cpu_native_bf16, precision

pytestmark = pytest.mark.slow  # trains both pipelines: `make test-fast` leaves it out


def test_throughput_bench_measures_ours_and_the_reference(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    code = throughput.main(
        ["--device", "cpu", "--settings", "16:8", "--steps", "2", "--workers", "0", "--out", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    assert result["machine"]["cpu"] and result["machine"]["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR")
    assert result["machine"]["native_bf16"] == cpu_native_bf16()
    (row,) = result["results"]
    assert (row["image_size"], row["batch"]) == (16, 8)
    assert row["ours"]["images_per_s"] > 0 and row["ours"]["steps"] == 2 and row["ours"]["cuda_graphs"] is False
    assert row["ours_cuda_graphs"] is None and row["cuda_graphs_error"] is None  # measured on GPUs only
    assert row["ours"]["precision"] == precision(torch.device("cpu"), "auto")[1]
    (ref,) = row["reference"]
    assert ref["workers"] == 0 and ref["images_per_s"] > 0
    assert row["speedup_vs_best_reference"] == row["ours"]["images_per_s"] / ref["images_per_s"]
    assert row["gflop_per_image"] > 0
    assert "16px b8" in capsys.readouterr().out


def test_gpu_options_bench_measures_each_variant_against_the_default(tmp_path, capsys, monkeypatch):
    """bench/gpu_options.py (issue 15, part 2) runs on a CPU too, where it checks itself: every variant is
    measured in one run and compared with the default; an unknown variant is refused before any timing."""
    from bench import gpu_options

    out = tmp_path / "options.json"
    argv = ["--device", "cpu", "--settings", "16:8", "--steps", "2", "--out", str(out)]
    assert gpu_options.main([*argv, "--variants", "default,eager,contiguous"]) == 0
    result = json.loads(out.read_text())
    (row,) = result["settings"]
    assert (row["image_size"], row["batch"]) == (16, 8) and row["gflop_per_image"] > 0
    assert list(row["variants"]) == ["default", "eager", "contiguous"]
    for name, r in row["variants"].items():
        assert r["images_per_s"] > 0 and r["tflop_per_s"] > 0 and r["cuda_graphs"] is False, name
    assert row["variants"]["eager"]["vs_default"] == pytest.approx(
        row["variants"]["eager"]["images_per_s"] / row["variants"]["default"]["images_per_s"]
    )
    assert "contiguous" in capsys.readouterr().out

    def broken(state):
        raise RuntimeError("inductor could not compile this")

    monkeypatch.setitem(gpu_options.VARIANTS, "compile", (True, broken))  # a variant that fails records why
    assert gpu_options.main([*argv, "--variants", "compile,eager"]) == 0
    (row,) = json.loads(out.read_text())["settings"]
    assert row["variants"]["compile"] == {"error": "RuntimeError: inductor could not compile this"}
    assert row["variants"]["eager"]["images_per_s"] > 0 and "vs_default" not in row["variants"]["eager"]
    with pytest.raises(SystemExit):
        gpu_options.main([*argv, "--variants", "default,fused-everything"])
    assert "unknown variant fused-everything" in capsys.readouterr().err
