"""Will the model fit? Parameters from safetensors headers (or the registry) x bytes per
parameter at the dtype, +20%, against free memory capped by EVALCORE_MEMORY_LIMIT_GB.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from evalcore import checkpoint
from evalcore.errors import InputError, NotEnoughMemoryError
from evalcore.models.registry import ModelSpec

log = logging.getLogger(__name__)

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _safetensors_params(files: list[Path]) -> int:
    """Parameter count from checked safetensors headers, reading no weights."""
    return sum(checkpoint.tensor_count(checkpoint.safetensors_header(f)) for f in files)


def parameter_count(spec: ModelSpec, folder: str) -> int | None:
    """Parameters of a model about to be loaded, or None when unknown without a download."""
    p = Path(folder)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        return _safetensors_params(files) if files else None
    if spec.hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec.hub_id, "model.safetensors")
            if isinstance(cached, str):
                return _safetensors_params([Path(cached)])
        except Exception as e:  # noqa: BLE001 - an estimate only; fall back to the registry
            log.debug("no parameter count from the hub cache for %s: %s", spec.hub_id, e)
    return int(spec.params_m * 1e6) if spec.params_m else None


def free_memory_bytes(device: str) -> int:
    """Memory free for a new model on `device`, capped by EVALCORE_MEMORY_LIMIT_GB when set
    (an operator's limit for a shared app, e.g. on Streamlit Cloud)."""
    free = 1 << 62
    if device.startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        free = min(_meminfo("MemAvailable") or free, _cgroup_free() or free)
    limit = memory_limit_bytes()
    return free if limit is None else min(free, limit)


def total_memory_bytes() -> int:
    """This machine's memory for the CPU: RAM, or the container's cgroup limit (Streamlit Cloud,
    docker) when lower, or EVALCORE_MEMORY_LIMIT_GB when set and lower still."""
    total = min(_meminfo("MemTotal") or 1 << 62, _cgroup_limit()[0] or 1 << 62)
    limit = memory_limit_bytes()
    return total if limit is None else min(total, limit)


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # not Linux: no refusal
        pass
    return None


def _cgroup_limit() -> tuple[int | None, int | None]:
    """(limit, usage) in bytes of the memory cgroup this process runs in (v2 or v1), or Nones
    when there is none or it is unlimited. Usage leaves out the inactive file cache (as docker
    reports it): pages of files read a while ago, which the kernel drops before it would
    refuse or kill anything (e.g. a model's weights read once, while converting them)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: memory.max beside memory.current
            d = Path("/sys/fs/cgroup") / path.lstrip("/")
            files = (d / "memory.max", d / "memory.current")
        elif "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            files = (d / "memory.limit_in_bytes", d / "memory.usage_in_bytes")
        else:
            continue
        try:
            limit_text, usage = files[0].read_text().strip(), int(files[1].read_text())
        except (OSError, ValueError):
            continue
        if limit_text.isdigit() and int(limit_text) < 1 << 60:  # "max" or v1's huge number: no limit
            return int(limit_text), max(0, usage - _inactive_file(d / "memory.stat"))
    return None, None


def _inactive_file(stat: Path) -> int:
    """The cgroup's inactive file cache in bytes (v1: total_inactive_file, v2: inactive_file), 0 if unknown."""
    try:
        fields = dict(line.split() for line in stat.read_text().splitlines() if line.count(" ") == 1)
    except (OSError, ValueError):
        return 0
    value = fields.get("total_inactive_file", fields.get("inactive_file", "0"))
    return int(value) if value.isdigit() else 0


def _cgroup_free() -> int | None:
    limit, usage = _cgroup_limit()
    return None if limit is None or usage is None else max(0, limit - usage)


def weights_bytes(spec: ModelSpec, dtype: str) -> int | None:
    """The registry's estimate of a model's weights at `dtype` (None for folders and hub ids)."""
    return int(spec.params_m * 1e6 * _DTYPE_BYTES.get(dtype, 4)) if spec.params_m else None


def memory_limit_bytes() -> int | None:
    """EVALCORE_MEMORY_LIMIT_GB in bytes (None when unset); anything but a finite positive number
    of GiB is an InputError."""
    import math

    limit = os.environ.get("EVALCORE_MEMORY_LIMIT_GB", "").strip()
    if not limit:
        return None
    try:
        gb = float(limit)
    except ValueError:
        gb = float("nan")
    if not math.isfinite(gb) or gb <= 0 or gb > 2**30:
        raise InputError(f"EVALCORE_MEMORY_LIMIT_GB={limit!r} is not a positive number of GiB; give e.g. 2.5, "
                         "or unset it for no limit")
    return int(gb * 2**30)


def check_memory(spec: ModelSpec, folder: str, dtype: str, device: str) -> None:
    """Refuse, before loading, a model whose weights would not fit in free memory
    (`NotEnoughMemoryError`).

    The estimate is parameters x bytes per parameter at `dtype`, plus 20% for activations
    and buffers; models already loaded in this process are not counted again.
    """
    n = parameter_count(spec, folder)
    if not n:
        return
    need = int(n * _DTYPE_BYTES.get(dtype, 4) * 1.2)
    free = free_memory_bytes(device)
    if need > free:
        raise NotEnoughMemoryError(
            f"{spec.name} needs about {need / 2**30:.1f} GiB on {device} at {dtype} ({n / 1e9:.2f}B parameters) "
            f"but {free / 2**30:.1f} GiB is free; pick a smaller model, use --dtype bfloat16, "
            "or on GPUs --device-map auto")
