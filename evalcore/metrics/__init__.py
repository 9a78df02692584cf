"""Pure maths over numpy arrays: no models, no I/O, randomness only via `random_state`.

    kl          entropy, cross-entropy, KL, JS, smoothing, Bregman divergence
    hellaswag   predictions, accuracy with intervals, choice distributions, paired tests
    bytekl      per-position KL both ways and JS between two models' next-byte distributions
    crosskl     the cross-entropy gap and Monte-Carlo KL per byte, with intervals
    perplexity  perplexity, bits per token and per byte from NLLs
    mauve       MAUVE cut at its steps: reduce, quantize, histograms, curve, area
    mauve_stats is a MAUVE difference real? paired re-clustered bootstrap, MAUVE against n
    frontier    the frontier without clustering (kNN, classifier), KL/JS/TV on histograms
    dialects    HellaSwag's scoring dialects (acc, acc_norm, acc_bytes, acc_tokens, acc_mutual_info)
    calibration ECE, Brier score, NLL and reliability bins of a choice distribution
    power       the noise floor of a paired accuracy comparison (McNemar power)
"""
