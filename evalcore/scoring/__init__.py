"""Forward passes (with `models`, the only torch code). Token ids in, numpy out.

    loglik    log-likelihoods of continuations given a shared context (HellaSwag)
    windows   sliding-window token NLLs (perplexity) and token-level distributions of two models (KL)
"""
from evalcore.scoring.loglik import Group, encode_pair, iter_logprobs, reference_logprobs, score_groups
from evalcore.scoring.windows import token_divergences, token_nlls, windows

__all__ = ["Group", "encode_pair", "iter_logprobs", "reference_logprobs", "score_groups",
           "token_divergences", "token_nlls", "windows"]
