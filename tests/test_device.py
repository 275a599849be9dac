"""Which precision a run trains in, and why: bf16 where the CPU (or GPU) trains faster in it, else float32."""

import json

import pytest
import torch
from conftest import tiny_config

from core import device as dev
from core.errors import StudioError
from core.train import run_training

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "vendor", "dtype", "why"),
    [
        (True, True, "Intel", torch.bfloat16, "natively (AMX)"),  # Sapphire Rapids and later
        (False, True, "AMD", torch.bfloat16, "natively (AVX-512 BF16 on AMD)"),  # Zen 4: bf16 1.9x float32
        # Intel without AMX (Cooper Lake, or AMX hidden by a VM): bf16 measured slower than float32 (1.43x)
        (False, True, "Intel", None, "AVX-512 BF16 but no AMX"),
        (False, True, "", None, "AVX-512 BF16 but no AMX"),  # vendor unknown: float32 is never the slow one
        (False, False, "AMD", None, "neither AMX nor AVX-512 BF16"),  # an AVX2-only CPU
        (False, False, "Intel", None, "neither AMX nor AVX-512 BF16"),
    ],
)
def test_auto_picks_bf16_where_it_trains_faster_than_float32(monkeypatch, amx, avx512_bf16, vendor, dtype, why):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(dev, "cpu_vendor", lambda: vendor)
    got, reason = dev.precision(CPU, "auto")
    assert got == dtype and why in reason
    assert dev.amp_dtype(CPU, "auto") == dtype


@pytest.mark.parametrize(
    ("cpuinfo", "processor", "vendor"),
    [
        ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n", "", "AMD"),
        ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n", "", "Intel"),
        (None, "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD", "AMD"),  # Windows: no /proc/cpuinfo
        (None, "Intel64 Family 6 Model 143 Stepping 8, GenuineIntel", "Intel"),
        (None, "i386", ""),  # macOS names no vendor
        ("processor\t: 0\nvendor_id\t: HygonGenuine\n", "", ""),
    ],
)
def test_the_cpu_vendor_is_read_from_its_vendor_id(monkeypatch, tmp_path, cpuinfo, processor, vendor):
    import builtins

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            if cpuinfo is None:
                raise FileNotFoundError(path)
            (tmp_path / "cpuinfo").write_text(cpuinfo)
            return real_open(tmp_path / "cpuinfo", *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(dev.platform, "processor", lambda: processor)
    assert dev.cpu_vendor() == vendor


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
