"""Which device to compute on, and whether to use bf16 autocast there."""

from __future__ import annotations

import os
import platform

import torch

from core.errors import StudioError

AMP_CHOICES = ("auto", "bf16", "off")


def pick_device(name: str = "auto", flag: str = "--device") -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; refuse devices that are not here, in
    words that name the option `flag` it was asked for by."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise StudioError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StudioError(f"device '{name}' asked for, but this machine has no CUDA GPU; use {flag} cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StudioError(f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} GPU(s).")
    elif dev.type != "cpu":
        raise StudioError(f"unsupported device '{name}'; use auto, cpu, cuda or cuda:N.")
    return dev


def host_memory_bytes() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _probe(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def cpu_native_bf16() -> str | None:
    """The CPU feature with which oneDNN runs bf16 convolutions natively, or None: AMX tiles (Intel
    Sapphire Rapids and later; a ResNet-18 training step about 3x faster in bf16 than in float32) or
    AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake, or an Intel CPU whose AMX the system hides).
    Elsewhere bf16 is emulated and slower."""
    if _probe("_is_amx_tile_supported"):
        return "AMX"
    if _probe("_is_avx512_bf16_supported"):
        return "AVX-512 BF16"
    return None


def cpu_vendor() -> str:
    """'AMD', 'Intel' or '' (not known), by the vendor id the CPU reports (AuthenticAMD, GenuineIntel): from
    /proc/cpuinfo on Linux, else the platform's processor string (Windows names it there)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = next((line for line in f if line.startswith("vendor_id")), "")
    except OSError:
        text = ""
    text = text or platform.processor()
    return "AMD" if "AuthenticAMD" in text else "Intel" if "GenuineIntel" in text else ""


def precision(device: torch.device, amp: str = "auto") -> tuple[torch.dtype | None, str]:
    """The autocast dtype for `device` under `--amp` (None: full float32) and why, in words for the log.

    On the CPU, auto takes bf16 where it trains faster than float32: with AMX (3x), and with AVX-512 BF16 on
    AMD (Zen 4: 1.9x, one 512-bit float32 FMA every other cycle). An Intel CPU with AVX-512 BF16 but no AMX
    stays in float32: its two 512-bit FMA units already run float32 as fast, and bf16's casts make it slower
    (a 2-core Xeon whose AMX its virtual machine hides: the quick preset 1.43x slower, a step 0.8x)."""
    if amp not in AMP_CHOICES:
        raise StudioError(f"unknown --amp '{amp}'; choose one of {', '.join(AMP_CHOICES)}.")
    if amp == "off":
        return None, "float32: --amp off"
    if amp == "bf16":
        return torch.bfloat16, "bf16 autocast: --amp bf16"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast: this GPU supports bf16"
        return None, "float32: this GPU has no bf16"
    feature = cpu_native_bf16()
    if feature == "AMX":
        return torch.bfloat16, "bf16 autocast: this CPU runs bf16 natively (AMX)"
    if feature and cpu_vendor() == "AMD":
        return torch.bfloat16, "bf16 autocast: this CPU runs bf16 natively (AVX-512 BF16 on AMD)"
    if feature:
        return None, (
            "float32: this CPU has AVX-512 BF16 but no AMX, where float32 trains faster than bf16 "
            "(--amp bf16 to try it)"
        )
    return None, "float32: this CPU has neither AMX nor AVX-512 BF16, so bf16 would be emulated and slower"


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """bf16 when asked, or (auto) on GPUs that support it and on CPUs that run it natively (see
    `precision`); None means full float32."""
    return precision(device, amp)[0]


def list_devices() -> list[tuple[str, str]]:
    """(value, label) for the CPU and each CUDA GPU with its name and free memory."""
    import os

    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            name = torch.cuda.get_device_name(i)
            out.append((f"cuda:{i}", f"GPU {i}: {name}, {free / 2**30:.1f} of {total / 2**30:.1f} GB free"))
    out.append(("cpu", f"CPU ({os.cpu_count()} cores)"))
    return out
