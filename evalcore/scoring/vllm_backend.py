"""Optional high-throughput HellaSwag scoring with vLLM's prompt log-probs (CUDA machines only).

vLLM is not a dependency: it is imported only here, only when asked for (`--backend vllm`),
and its absence is one line (`ModelUnavailableError`), never a traceback.

The token boundary is the HF path's (`loglik.encode_pair`, lm-eval's): the same `Group`s,
built by the same tokenizer from the same folder, are sent as prompt token ids, and vLLM
returns log p(token_i | tokens_<i) for every prompt position (`prompt_logprobs`):

    prompt:           ctx_0 ... ctx_{Lc-1} | cont_0 ....... cont_{m-1}
    prompt_logprobs:  None  ...  (unused)  | lp(cont_0) ... lp(cont_{m-1})
                                             ^ position Lc: first continuation token

so the continuation's log-likelihood is the sum over positions Lc .. Lc+m-1, exactly what
`iter_logprobs` in `loglik` computes from its packed rows (context once per item). vLLM's prefix cache shares
each context among its four endings in the same way. Results are stored under a model
identity that says `backend: vllm` (bf16 kernels differ from transformers' by ~1e-2 nats),
so they never mix with the HF path's records.

Not tested here (no CUDA, vLLM must not be installed on this machine) beyond the import guard.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError, ModelUnavailableError
from evalcore.models import LoadedModel
from evalcore.scoring.loglik import Group

log = logging.getLogger(__name__)

MISSING = "vLLM is not installed; pip install vllm on a CUDA machine"


def require_vllm() -> Any:
    """The `vllm` module, or a one-line ModelUnavailableError saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise ModelUnavailableError(MISSING) from None
    return vllm


@dataclass
class VLLMModel(LoadedModel):
    """A vLLM engine (`model` is a `vllm.LLM`) with the HF tokenizer of the same folder."""

    max_model_len: int = 0  # longest prompt the engine accepts (tokens)
    backend: str = "vllm"

    def identity(self) -> dict[str, Any]:
        """What a stored result is keyed on, with the backend (vLLM's numbers differ slightly)."""
        return {**super().identity(), "backend": self.backend}


def load_vllm(name: str, *, dtype: str = "auto", gpu_memory_utilization: float = 0.9,
              tensor_parallel_size: int = 1) -> VLLMModel:
    """Start a vLLM engine on the weights `load_model` would use (converted bundle, folder or hub id).

    Parameters
    ----------
    name : registry name, local folder or hub id (as for `models.load_model`).
    dtype : "auto" (bfloat16), "float32", "bfloat16" or "float16".
    gpu_memory_utilization : fraction of GPU memory vLLM may reserve (weights + KV cache).
    tensor_parallel_size : GPUs one model is split over (vLLM's own model parallelism).

    Raises
    ------
    ModelUnavailableError
        vLLM is not installed, or the model cannot be loaded.
    """
    vllm = require_vllm()
    from transformers import AutoTokenizer

    from evalcore import models

    spec = models.resolve_spec(name)
    folder, fingerprint, revision = models.weights_source(spec)
    dt = "bfloat16" if dtype == "auto" else dtype
    t0 = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, **({"revision": revision} if revision else {}))
        llm = vllm.LLM(model=folder, tokenizer=folder, dtype=dt, revision=revision, trust_remote_code=False,
                       enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
                       tensor_parallel_size=tensor_parallel_size, seed=0)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelUnavailableError(f"vLLM could not load {name!r} from {folder} ({type(e).__name__}: {e})") from e
    max_len = int(llm.llm_engine.model_config.max_model_len)
    fp = fingerprint or (spec.hub_id and models.hub_commit(spec.hub_id, revision)) or revision or "unknown"
    dt_s = time.perf_counter() - t0
    log.info("vLLM engine for %s from %s in %.1fs (%s, max_model_len %d)", spec.name, folder, dt_s, dt, max_len)
    return VLLMModel(spec, llm, tok, "cuda", dt, fp, folder, dt_s, max_model_len=max_len)


def iter_logprobs(
    lm: VLLMModel,
    groups: Sequence[Group],
    *,
    batch_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[int], list[list[npt.NDArray[np.float64]]]]]:
    """Score groups with vLLM, yielding batches like `loglik.iter_logprobs` (same contract).

    A batch is a slice of groups under `batch_tokens` prompt tokens (default 2**20): vLLM
    schedules inside it; the caller stores each batch, so a killed run resumes as with HF.

    Yields
    ------
    (indices, logprobs): indices into `groups`; for each, one float64 array per
    continuation with the log-prob of each of its tokens (natural log).
    """
    from vllm import SamplingParams

    # one generated token is the least vLLM will do; prompt_logprobs=1 returns the prompt token's own log-prob
    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)
    budget = batch_tokens or 1 << 20
    for g in groups:
        n = len(g.context) + max(len(c) for c in g.continuations)
        if n > lm.max_model_len:
            raise InputError(f"a context + ending of {n} tokens exceeds the vLLM engine's max_model_len "
                             f"{lm.max_model_len}; use the hf backend")
    batch: list[int] = []
    cost = 0
    for i, g in enumerate(groups):
        if batch and cost + g.n_tokens > budget:
            yield batch, _score(lm, [groups[j] for j in batch], params)
            if progress:
                progress(len(batch))
            batch, cost = [], 0
        batch.append(i)
        cost += g.n_tokens
    if batch:
        yield batch, _score(lm, [groups[j] for j in batch], params)
        if progress:
            progress(len(batch))


def _score(lm: VLLMModel, batch: list[Group], params: Any) -> list[list[npt.NDArray[np.float64]]]:
    """One vLLM call for every (group, continuation) of the batch; ctx + cont sequences as in lm-eval."""
    prompts = [{"prompt_token_ids": list(g.context) + list(c)} for g in batch for c in g.continuations]
    outputs = lm.model.generate(prompts, params, use_tqdm=False)
    out: list[list[npt.NDArray[np.float64]]] = []
    k = 0
    for g in batch:
        lc = len(g.context)
        per_cont = []
        for c in g.continuations:
            plp = outputs[k].prompt_logprobs  # [Lc + m]: None at 0, then {token id: Logprob} per position
            k += 1
            per_cont.append(np.array([plp[lc + j][tid].logprob for j, tid in enumerate(c)], dtype=np.float64))
        out.append(per_cont)
    return out
