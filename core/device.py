"""Which device to compute on, and whether to use bf16 autocast there."""

from __future__ import annotations

import torch

from core.errors import StudioError

AMP_CHOICES = ("auto", "bf16", "off")


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; refuse devices that are not here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise StudioError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StudioError(f"device '{name}' asked for, but this machine has no CUDA GPU; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StudioError(f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} GPU(s).")
    elif dev.type != "cpu":
        raise StudioError(f"unsupported device '{name}'; use auto, cpu, cuda or cuda:N.")
    return dev


def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs with AMX tiles (Intel Sapphire Rapids and later), where oneDNN runs bf16 convolutions
    natively: a ResNet-18 training step there is about 3x faster in bf16 than in float32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """bf16 when asked, or (auto) on GPUs that support it and on CPUs with bf16 matrix units;
    None means full float32."""
    if amp not in AMP_CHOICES:
        raise StudioError(f"unknown --amp '{amp}'; choose one of {', '.join(AMP_CHOICES)}.")
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_bf16_matrix_units():
        return torch.bfloat16
    return None


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
