"""Every process-wide setting evalcore makes, in one place: each applied once, under a lock, and
never over a value the user (or the machine) already set.

    tune_cpu_allocator()     glibc malloc thresholds that keep activation pages mapped (CPU loads)
    prefer_small_memory()    a server's choice instead: glibc's own thresholds, and
    release_free_memory()    freed heap memory handed back after each heavy call
    sdpa_gqa()               transformers' CPU attention reads grouped key/value heads directly
                             (TRANSFORMERS_SDPA_FORCE_GQA), for the duration of a forward pass
    env_default(name, v)     a variable set only for the duration of one step (a library that
                             reads it then), unless the user has set it; never seen by children
                             started outside that step
    import_faiss()           faiss with its bundled OpenBLAS on this CPU's kernel family
    one_openmp_thread()      OpenMP on one thread around faiss's small k-means fits
    gguf_parsed_once()       transformers' GGUF loading parses each file once per block, not
                             once per tokenizer, config and model (a conversion)

No other module writes os.environ.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal

log = logging.getLogger(__name__)

_LOCK = threading.RLock()

MALLOC_MMAP_THRESHOLD = 256 << 20  # bytes: tensors below this come from the heap, not fresh mmaps
MALLOC_TRIM_THRESHOLD = 1 << 30  # bytes of free heap kept for reuse before any is returned to the OS
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_malloc_tuned: bool | None = None  # None: not tried yet in this process


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process for reuse (glibc only; True when applied).

    A forward pass on CPU allocates and frees many activations of 1-10 MB. glibc's malloc serves
    each from fresh pages (mmap, or heap memory it handed back to the OS a moment before), so
    every pass page-faults the same memory in again: ~300,000 faults for 200 HellaSwag items
    with SmolLM2, about 1.3 us each (bench/RESULTS.md, 2026-11-29). With these two thresholds the pages stay mapped and
    the faults are gone (tens of thousands per run, then none): bf16 HellaSwag ran ~10% faster
    in alternating runs. The cost: the process keeps up to `MALLOC_TRIM_THRESHOLD` of freed
    memory instead of returning it.

    Called when a model is loaded for CPU. Process-wide and idempotent. A user's own
    `MALLOC_*_` or `GLIBC_TUNABLES=glibc.malloc...` settings win, and `EVALCORE_TUNE_MALLOC=0`
    keeps glibc's own behaviour."""
    with _LOCK:
        return _tune_malloc()


def _tune_malloc() -> bool:
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("EVALCORE_TUNE_MALLOC", "1") == "0" or any(k in os.environ for k in _MALLOC_ENV) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    _malloc_tuned = _set_malloc_thresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    log.debug("glibc malloc thresholds set: %s", _malloc_tuned)
    return _malloc_tuned


def _glibc() -> Any:
    """The C library when it is glibc on Linux (for mallopt and malloc_trim), else None."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _set_malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    libc = _glibc()
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes) and libc.mallopt(M_TRIM_THRESHOLD, trim_bytes))


def prefer_small_memory() -> None:
    """For a server that shares a small box (the app): glibc's own malloc thresholds in this
    process, never `tune_cpu_allocator`'s, which keep up to `MALLOC_TRIM_THRESHOLD` of freed
    memory per process for speed. Call it before the first model load; if the thresholds were
    already set, glibc's defaults (128 KiB) are put back. A user's own settings still win."""
    global _malloc_tuned
    with _LOCK:
        if _malloc_tuned:
            _set_malloc_thresholds(128 << 10, 128 << 10)
        _malloc_tuned = False


def release_free_memory() -> bool:
    """Return the memory freed tensors left in glibc's heaps to the OS (`malloc_trim(0)`; glibc
    keeps a heap per thread that allocated, and a server runs each visitor in a thread). For a
    server, after a heavy call; a few milliseconds. True when glibc released something."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def sdpa_gqa() -> contextlib.AbstractContextManager[None]:
    """For one forward pass through transformers on CPU: SDPA reads grouped key/value heads
    directly (enable_gqa) instead of transformers repeating them per query head, which is exact
    and about a third less attention time with a mask. transformers does this by itself only
    without a mask (CUDA's masked GQA falls back to a slow kernel), and reads the switch from
    the environment, so it is set for the pass alone, under the settings lock, and never seen
    by another process. evalcore's own forward passes enable_gqa itself."""
    return env_default("TRANSFORMERS_SDPA_FORCE_GQA", "1")


@contextlib.contextmanager
def env_default(name: str, value: str | None) -> Iterator[None]:
    """`name=value` in the environment for the block only, unless the user has set `name` (or
    value is None). Holds the settings lock, so two threads never see each other's value."""
    with _LOCK:
        if value is None or name in os.environ:
            yield
            return
        os.environ[name] = value
        try:
            yield
        finally:
            os.environ.pop(name, None)


def _openblas_coretype() -> str | None:
    """The OpenBLAS kernel family this CPU can run (Linux x86-64 only), or None to leave it be."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(flags):
        return "SkylakeX"
    if {"avx2", "fma"} <= set(flags):
        return "Haswell"
    return None


def import_faiss() -> ModuleType:
    """faiss, imported so that its bundled BLAS runs this CPU's vector kernels.

    faiss-cpu wheels bundle an OpenBLAS (0.3.15 in faiss-cpu 1.15) that does not recognise
    recent CPUs ("Core not found" on this Sapphire Rapids VM) and falls back to a generic
    kernel: k-means assignment, a BLAS product each iteration, ran 7x slower (50 ms against 7 ms
    for 4000 points x 300 centroids x 604 dims). Unless the user has set OPENBLAS_CORETYPE, name
    the kernel family for the duration of the import only: OpenBLAS reads it when it loads, so
    numpy's own OpenBLAS (already loaded) and child processes are untouched. Results are the
    same; only the speed changes. If faiss was imported before (e.g. by mauve-text), it is
    used as it is.
    """
    core = None if "faiss" in sys.modules else _openblas_coretype()
    with env_default("OPENBLAS_CORETYPE", core):
        import faiss
    return faiss


@contextlib.contextmanager
def one_openmp_thread() -> Iterator[None]:
    """OpenMP on one thread for the block (faiss's k-means), then back to what it was.

    MAUVE's k-means fits (thousands of points) are too small to share out: OpenMP threads
    that spin-wait for one another made a fit 100x slower on a busy 2-core machine, and a
    Streamlit Cloud container may have a fraction of a core. faiss and PyTorch share one
    OpenMP runtime, whose thread count belongs to the calling thread: it is restored here,
    so the same thread's next forward pass keeps all its cores. OMP_NUM_THREADS, when the
    user set it, is left alone.
    """
    faiss = import_faiss()
    if os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
        torch.set_num_threads(before)


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """For the block: `gguf.GGUFReader` returns one parsed reader per file, and
    `gguf.get_tensor_name_map` one map per architecture and depth.

    transformers' GGUF loading (`from_pretrained(..., gguf_file=)`) builds a reader for the
    tokenizer, again for the config, and again for the weights, and parsing a 49k-token
    vocabulary element by element took ~5 s each time; it also rebuilds the tensor-name map
    once per tensor. Both are read-only, so sharing them changes no byte of the result (a test
    compares the converted weights; the times are in bench/RESULTS.md, Loading). The two names
    are put back when the block ends; the settings lock keeps other threads out.
    """
    import functools

    import gguf

    with _LOCK:
        reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        parsed: dict[tuple[str, str], gguf.GGUFReader] = {}

        def read_once(path: os.PathLike[str] | str, mode: Literal["r", "r+", "c"] = "r") -> gguf.GGUFReader:
            key = (str(path), mode)
            if key not in parsed:
                parsed[key] = reader(path, mode)
            return parsed[key]

        swaps = {"GGUFReader": (reader, read_once),
                 "get_tensor_name_map": (name_map, functools.lru_cache(maxsize=None)(name_map))}
        for name, (_, new) in swaps.items():
            setattr(gguf, name, new)
        try:
            yield
        finally:
            for name, (old, _) in swaps.items():
                setattr(gguf, name, old)
