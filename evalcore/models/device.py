"""Where inference runs and in which dtype: "auto" resolved once, other values checked.
"""
from __future__ import annotations

from evalcore.errors import ModelUnavailableError


def resolve_device(device: str = "auto") -> str:
    """"auto" -> cuda > mps > cpu; anything else is checked and returned."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelUnavailableError("device 'mps' requested but Apple's MPS is not available here; use --device cpu")
    if device.startswith("cuda:"):
        n = device.split(":", 1)[1]
        if not n.isdigit() or int(n) >= torch.cuda.device_count():
            raise ModelUnavailableError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                                        "device(s); use cuda:0 .. cuda:N-1 or cuda")
    if device not in {"cpu", "mps"} and not device.startswith("cuda"):
        raise ModelUnavailableError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """"auto" -> bfloat16 on CUDA, float32 elsewhere.

    On this CPU (AMX) bf16 is ~3x faster but moves HellaSwag log-likelihoods by ~1e-2
    nats; float32 stays the CPU default so results match lm-evaluation-harness exactly.
    Ask for bfloat16 explicitly for speed (bench/hellaswag_throughput.py measures both).
    """
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in {"float32", "bfloat16", "float16"}:
        raise ModelUnavailableError(f"unknown dtype {dtype!r}; use auto, float32 or bfloat16")
    return dtype


def device_summary(device: str = "auto") -> str:
    """Where inference runs, in words: 'CPU (2 threads)', 'GPU (NVIDIA H200)', 'Apple GPU (MPS)'."""
    import torch

    dev = resolve_device(device)
    if dev.startswith("cuda"):
        return f"GPU ({torch.cuda.get_device_name(torch.device(dev))})"
    if dev == "mps":
        return "Apple GPU (MPS)"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"
