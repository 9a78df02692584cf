"""Pure maths over numpy arrays: no models, no I/O, randomness only via `random_state`.

    kl          entropy, cross-entropy, KL, JS, smoothing, Bregman divergence
    hellaswag   predictions, accuracy with intervals, choice distributions, paired tests
    bytekl      per-position KL both ways and JS between two models' next-byte distributions
"""
