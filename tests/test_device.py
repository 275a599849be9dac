"""Which precision a run trains in, and why: bf16 where the CPU (or GPU) runs it natively, else float32."""

import json

import pytest
import torch
from conftest import tiny_config

from core import device as dev
from core.errors import StudioError
from core.train import run_training

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "dtype", "why"),
    [
        (True, True, torch.bfloat16, "natively (AMX)"),
        (False, True, torch.bfloat16, "natively (AVX-512 BF16)"),  # e.g. AMD Zen 4
        (False, False, None, "neither AMX nor AVX-512 BF16"),  # e.g. an AVX2-only CPU
    ],
)
def test_auto_picks_bf16_on_every_cpu_that_runs_it_natively(monkeypatch, amx, avx512_bf16, dtype, why):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    got, reason = dev.precision(CPU, "auto")
    assert got == dtype and why in reason
    assert dev.amp_dtype(CPU, "auto") == dtype


def test_a_missing_probe_reads_as_no_native_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert dev.cpu_native_bf16() is None


@pytest.mark.parametrize(("amp", "dtype"), [("off", None), ("bf16", torch.bfloat16)])
def test_an_explicit_choice_wins_and_says_so(amp, dtype):
    got, reason = dev.precision(CPU, amp)
    assert got == dtype and f"--amp {amp}" in reason


def test_an_unknown_amp_is_refused():
    with pytest.raises(StudioError, match="unknown --amp 'fp8'"):
        dev.precision(CPU, "fp8")


def test_a_run_logs_and_records_its_precision_and_why(tmp_path):
    run = run_training(tiny_config(tmp_path))
    expected, why = dev.precision(CPU, "auto")
    status = json.loads((run / "status.json").read_text())
    assert status["precision"] == {"autocast": "bfloat16" if expected else None, "why": why}
    assert f"precision: {why}" in (run / "train.log").read_text()
