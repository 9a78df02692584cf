"""Forward passes (with `models`, the only torch code). Token ids in, numpy out.

    loglik    log-likelihoods of continuations given a shared context (HellaSwag)
    windows   sliding-window token NLLs (perplexity) and token-level distributions of two models (KL)
    generate  batched sampling, reproducible per item (MAUVE's model texts)
    features  text features for MAUVE (sentence embedder or a causal LM's last hidden state)
"""
from evalcore.scoring.loglik import Group, encode_pair, iter_logprobs, reference_logprobs, score_groups
from evalcore.scoring.features import featurize
from evalcore.scoring.generate import Decoding, generate
from evalcore.scoring.windows import token_divergences, token_nlls, windows

__all__ = ["Decoding", "featurize", "generate", "Group", "encode_pair", "iter_logprobs", "reference_logprobs", "score_groups",
           "token_divergences", "token_nlls", "windows"]
