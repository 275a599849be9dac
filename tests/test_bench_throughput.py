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
