"""Forward passes (with `models`, the only torch code). Token ids in, numpy out.

    loglik    log-likelihoods of continuations given a shared context (HellaSwag)
    windows   sliding-window token NLLs (perplexity) and token-level distributions of two models (KL)
    generate  batched sampling, reproducible per item (MAUVE's model texts)
    features  text features for MAUVE (sentence embedder or a causal LM's last hidden state)
    nextbyte  exact next-byte distributions of a short text, marginalised over tokenizations
              (cross-tokenizer KL byte by byte; `tokenbytes`: the bytes each token spells)
"""
from evalcore.scoring.loglik import Group, encode_pair, iter_logprobs, reference_logprobs, score_groups
from evalcore.scoring.features import featurize
from evalcore.scoring.generate import Decoding, generate
from evalcore.scoring.nextbyte import (LMTokenModel, NextByteDists, TokenModel, next_byte_distributions,
                                       next_byte_divergences)
from evalcore.scoring.tokenbytes import token_byte_table
from evalcore.scoring.windows import token_divergences, token_nlls, windows

__all__ = ["Decoding", "featurize", "generate", "Group", "encode_pair", "iter_logprobs", "reference_logprobs", "score_groups",
           "token_divergences", "token_nlls", "windows", "LMTokenModel", "NextByteDists", "TokenModel",
           "next_byte_distributions", "next_byte_divergences", "token_byte_table"]
