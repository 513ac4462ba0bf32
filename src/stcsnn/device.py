"""Choosing the torch device from a config value or a ``--device`` flag, and the autocast dtype."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from stcsnn.errors import ConfigError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    ``local_rank`` is this process's rank on its node (torchrun's ``LOCAL_RANK``; 0 for one process): ``cuda``
    and ``auto`` take GPU ``local_rank``, and ``cuda:N`` takes GPU ``N + local_rank``, so N names the first of
    the node's GPUs the run uses (one process: GPU N itself). Without the offset every rank would share GPU N.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    first = _cuda_index(name)
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    index = first + local_rank
    count = torch.cuda.device_count()
    if index >= count:
        rank = f" + local rank {local_rank}" if local_rank else ""
        raise ConfigError(f"device {name!r}{rank} is GPU {index}, but only {count} CUDA device(s) are visible "
                          f"(GPUs 0..{count - 1})")
    return torch.device("cuda", index)


def _cuda_index(name: str) -> int:
    """The N of ``cuda:N`` (0 for ``cuda``); anything else is a ConfigError."""
    if name == "cuda":
        return 0
    prefix, _, index = name.partition(":")
    if prefix != "cuda" or not index.isdigit():
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return int(index)


#: ``amp`` config value -> autocast dtype (``None``: full precision).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str | None) -> AbstractContextManager:
    """The autocast context of a run: ``amp`` ``bf16`` / ``fp16``, or disabled (``None``)."""
    return torch.autocast(device.type, dtype=AMP_DTYPES.get(amp or "", torch.bfloat16), enabled=amp is not None)


def grad_scaler(device: torch.device, amp: str | None) -> torch.amp.GradScaler:
    """The gradient scaler of a run: active for fp16 on CUDA only (bf16 and float32 need none); always an
    object, so the training step has no ``if scaler`` branches (a disabled scaler passes everything through)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or None where it cannot be read: results depend on it
    (oneDNN picks kernels by CPU), so every measurement names it."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


#: the CPU capabilities (:func:`torch.cpu.get_capabilities`) that compute bfloat16 in hardware: AVX512-BF16 and
#: AMX-BF16 on x86, the BF16 extensions of NEON and SVE on ARM64. Without one, bf16 autocast still runs, but the
#: kernels emulate bf16 (converting to float32 and back), which costs time instead of saving it.
CPU_BF16_CAPABILITIES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CPU: :data:`CPU_BF16_CAPABILITIES`; CUDA: a GPU with bf16
    arithmetic, Ampere or later, not the emulation of older GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities()
        return any(caps.get(name, False) for name in CPU_BF16_CAPABILITIES)
    return False


def slow_bf16_note(device: torch.device, amp: str | None) -> str | None:
    """The one line a run under ``amp`` prints when it asks for bf16 on a device without native bf16 (it runs
    anyway, slowly); ``None`` otherwise."""
    if amp != "bf16" or native_bf16(device):
        return None
    what = "GPU" if device.type == "cuda" else "CPU"
    return (f"note: amp bf16 on {device}: this {what} has no native bf16 arithmetic, so bf16 is emulated and will "
            "be slow; running anyway")
