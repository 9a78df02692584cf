"""Text features for MAUVE: a sentence embedder (mean pooled) or a causal LM's last hidden state.

    minilm    all-MiniLM-L6-v2 (bundled), mean of token embeddings over the attention mask,
              L2-normalised (sentence-transformers' pipeline); the offline default
    causal    last token's final hidden state (mauve-text's featurizer; gpt2-large online)

Texts are sorted by length and batched, so padding is small; results come back in order.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from evalcore.models import LoadedModel
from evalcore.scoring.batch import pad_batch


def featurize(lm: LoadedModel, texts: Sequence[str], *, kind: str, max_length: int = 256,
              batch_size: int = 32) -> npt.NDArray[np.float32]:
    """[n, dim] features of texts ("minilm": mean pooled; "causal": last-token hidden state)."""
    import torch

    tok = lm.tokenizer
    enc = [tok(t, truncation=True, max_length=max_length).input_ids for t in texts]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    body = lm.model if kind == "minilm" else lm.model.base_model
    out: list[np.ndarray] = [np.empty(0)] * len(enc)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        inp, mask = pad_batch([enc[i] for i in idx])
        with torch.inference_mode():
            h = body(input_ids=inp.to(lm.device), attention_mask=mask.to(lm.device)).last_hidden_state.float()
            if kind == "minilm":
                m = mask.to(h.device)[:, :, None].float()
                f = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)
            else:
                f = h[torch.arange(len(idx)), mask.sum(1).to(h.device) - 1]
        for b, i in enumerate(idx):
            out[i] = f[b].cpu().numpy()
    return np.stack(out).astype(np.float32)
