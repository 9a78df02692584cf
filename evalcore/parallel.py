"""Data parallelism over torch.distributed, launched by `torchrun` (or `accelerate launch`).

    torchrun --standalone --nproc_per_node W -m evalcore hellaswag --model M --limit N --out r.json

    rank r of W:   items[r::W] -> forward passes -> the shared store (one transaction per batch)
    ---------------------------------- barrier ----------------------------------
    rank 0:        all N items -> store reads only (no forward pass) -> metrics -> JSON
    other ranks:   write nothing and exit 0

The store is the gather: records are keyed by content (model, item, code version) and
written with `INSERT OR IGNORE` in SQLite WAL mode, so ranks write one file side by side
and rank 0's read of all items is an ordinary cache hit. A rank killed mid-run loses only
its batch in flight; a rerun reads what every rank had stored and scores the rest.

`data_parallel(d, run, items)` is that recipe for any run over items (HellaSwag, perplexity).

Without RANK and WORLD_SIZE > 1 in the environment (a plain `python -m evalcore`), `from_env`
returns a one-process `Dist` that initializes nothing, changes no thread count and whose
methods are no-ops, so single-process runs are unchanged. torch is imported only when a
process group is actually started.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, final

from evalcore.errors import InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TIMEOUT_S = 24 * 3600  # a rank that finished waits at the barrier for the slowest one; a resumed run
# can leave one rank with nothing to do while another scores for hours, so the limit is a day, not gloo's 30 min


@final
@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job (a job of one when not launched by torchrun)."""

    rank: int = 0  # this process, 0..world-1 (RANK)
    world: int = 1  # processes in the job, all nodes (WORLD_SIZE)
    local_rank: int = 0  # this process on its node: picks its GPU (LOCAL_RANK)
    local_world: int = 1  # processes on this node: they share its CPU cores (LOCAL_WORLD_SIZE)
    backend: str | None = None  # "nccl" or "gloo"; None: one process, no process group
    device: str = "auto"  # device for this rank's model: "cuda:LOCAL_RANK", "cpu", or the user's choice alone

    @property
    def enabled(self) -> bool:
        """True when a process group was started (more than one rank)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reads everything back and writes the JSON."""
        return self.rank == 0

    def shard(self, seq: Sequence[T]) -> list[T]:
        """This rank's disjoint, strided share: seq[rank::world] (interleaved, so long and short items mix)."""
        return list(seq)[self.rank :: self.world]

    def barrier(self) -> None:
        """Wait until every rank got here (no-op for one process)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (small, picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Tear the process group down (no-op for one process)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> Dist:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # Ranks leave together: a rank that tears its process group down while rank 0 is still
        # reading back and writing the JSON can abort it ("terminate called without an active
        # exception", gloo). After an error, no barrier: torchrun stops the other ranks.
        if exc_type is None:
            self.barrier()
        self.close()


def from_env(device: str = "auto", *, environ: Mapping[str, str] | None = None,
             timeout_s: float | None = None) -> Dist:
    """Join the job torchrun (or `accelerate launch`) described in the environment, if any.

    Parameters
    ----------
    device : the user's `--device`. Under torchrun, "auto" and "cuda" become cuda:LOCAL_RANK
        (backend nccl) when CUDA is available, else cpu (backend gloo); "cpu" forces gloo on CPU.
    environ : the environment to read (default `os.environ`): RANK, WORLD_SIZE, LOCAL_RANK,
        LOCAL_WORLD_SIZE, and MASTER_ADDR/MASTER_PORT for the rendezvous.
    timeout_s : barrier and collective timeout; default EVALCORE_DIST_TIMEOUT or 24 h.

    Returns
    -------
    A `Dist`; use it as a context manager so the process group is destroyed at exit.
    On CPU each rank gets max(1, cores // LOCAL_WORLD_SIZE) torch threads, so ranks on one
    node do not oversubscribe it.
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        timeout = float(timeout_s if timeout_s is not None else env.get("EVALCORE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError as e:
        raise InputError(f"bad torchrun environment ({e}); launch with torchrun or accelerate launch") from None
    if "RANK" not in env or world <= 1:
        return Dist(device=device)
    if device not in {"auto", "cuda", "cpu"}:
        raise InputError(f"--device {device!r} under torchrun: give auto, cuda or cpu; each rank takes "
                         "cuda:LOCAL_RANK (or the CPU) itself")
    import torch
    import torch.distributed as dist

    if device != "cpu" and torch.cuda.is_available():
        dev, backend = f"cuda:{local_rank}", "nccl"
        torch.cuda.set_device(local_rank)
    elif device == "cuda":
        raise InputError("--device cuda under torchrun, but CUDA is not available; use --device auto or cpu")
    else:
        dev, backend = "cpu", "gloo"
        torch.set_num_threads(max(1, _cpus() // max(1, local_world)))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
    d = Dist(rank, world, local_rank, local_world, backend, dev)
    log.info("rank %d/%d (local %d/%d) on %s, backend %s, %d torch threads", rank, world, local_rank, local_world,
             dev, backend, torch.get_num_threads())
    return d


def _cpus() -> int:
    """Cores this process may run on (the affinity mask in containers, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def data_parallel(d: Dist, run: Callable[[list[T]], R], items: Sequence[T], *, cached: str) -> R | None:
    """`run(items)`, spread over the ranks of `d`; the result on rank 0, None on the others.

    Each rank runs its shard, which writes its records to the shared store; after the
    barrier rank 0 runs all items, which reads them back without a forward pass. Its
    result then gets the whole job's wall time and the sum of the ranks' `cached` counts.
    """
    if not d.enabled:
        return run(list(items))
    if d.world != d.local_world and d.is_main:
        log.warning("ranks on %d nodes: rank 0 finds only the records in its own store file, and SQLite is unsafe "
                    "on network filesystems; prefer one job per node and `evalcore store-merge` (docs/scaling-out.md)",
                    d.world // max(1, d.local_world))
    t0 = time.perf_counter()
    mine = d.shard(items)
    n_cached = getattr(run(mine), cached) if mine else 0
    log.info("rank %d/%d: %d of %d items done (%d cached)", d.rank, d.world, len(mine), len(items), n_cached)
    d.barrier()
    total_cached = sum(d.gather(n_cached))
    if not d.is_main:
        return None
    res = run(list(items))
    return dataclasses.replace(res, seconds=time.perf_counter() - t0, **{cached: total_cached})  # type: ignore[type-var]
