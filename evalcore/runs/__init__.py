"""Orchestration: data + models -> scoring -> metrics -> store -> a result value.

Pages and the CLI call these functions; they never loop over items themselves.

    hellaswag   run_hellaswag: acc / acc_norm with per-item results; .dialects(): the scoring dialects
                and their calibration (run_unconditional: acc_mutual_info's extra pass)
    perplexity  run_perplexity: sliding-window perplexity; run_token_kl: token-level KL
    mauve       run_mauve -> MauveLab: human vs model texts, features, re-sliceable MAUVE
    mauve_stats run_mauve_difference (paired bootstrap), run_mauve_curves (MAUVE against n); fits stored
    lmeval      import_lm_eval: an lm-eval --log_samples HellaSwag file as a HellaSwagResult
"""
from evalcore.runs._memo import Progress
from evalcore.runs.hellaswag import (HellaSwagDialects, HellaSwagItemResult, HellaSwagResult, run_hellaswag,
                                     run_unconditional)
from evalcore.runs.mauve import MauveLab, features, model_texts, run_mauve
from evalcore.runs.perplexity import (PerplexityResult, TextNLL, TokenKLResult, check_same_tokenizer, run_perplexity,
                                      run_token_kl)

__all__ = ["MauveLab", "features", "model_texts", "run_mauve", "HellaSwagDialects", "HellaSwagItemResult", "HellaSwagResult", "PerplexityResult", "Progress", "TextNLL", "TokenKLResult",
           "check_same_tokenizer", "run_hellaswag", "run_unconditional", "run_perplexity", "run_token_kl"]
