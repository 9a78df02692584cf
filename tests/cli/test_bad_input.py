"""Bad CLI input: each case exits 2 with one line on stderr, no traceback, and no model load.

The cases live in `tests/support/bad_inputs.py` (BAD_INPUTS), shared with `bench/reliability_report.py`.
A guard replaces model loading with an error (exit 3), so a case that would load a model
before noticing the bad input fails here.

Every case runs `evalcore.cli.main` in this process (`clirun.cli_in_process`: exit status,
stdout and stderr at the descriptor level, the log lines and warnings a child would print, its
environment, folder and stdin, an empty model memo), which tests what the CLI decides and
prints without paying a child's start-up (interpreter, imports) 80 times. A sample also runs
through the real entry point, `python -m evalcore` in a child: one case per command, an
argument refused by the parser, one found at load time, and one fed through stdin, so what only
a fresh process shows (its exit status, output printed at import) is still checked.
"""
from __future__ import annotations

import pytest

from tests.support.bad_inputs import BAD_INPUTS, run_bad_input

THROUGH_THE_ENTRY_POINT = {
    "unknown model name",  # perplexity
    "mauve --limit 0",  # mauve on a model's texts
    "mauve features with NaN",  # mauve on features
    "mauve --k abc",  # refused by the argument parser
    "kl --top-k 0",  # kl
    "store-merge --into another program's SQLite",  # store-merge
    "--text-file /dev/stdin fed /dev/zero",  # the child's own stdin
    "EVALCORE_CACHE is a file",  # found at load time, without the guard
}  # hellaswag's go through it in tests/runs/test_hellaswag.py
SAMPLE = [c for c in BAD_INPUTS if c.name in THROUGH_THE_ENTRY_POINT]
assert len(SAMPLE) == len(THROUGH_THE_ENTRY_POINT), "a sampled case was renamed"


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.name for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(case, tmp_path):
    run, problem = run_bad_input(case, tmp_path, in_process=True)
    assert problem is None, f"{case.name}: {problem}\nstderr: {run.err}"


@pytest.mark.parametrize("case", SAMPLE, ids=[c.name for c in SAMPLE])
def test_bad_input_through_the_real_entry_point(case, tmp_path):
    run, problem = run_bad_input(case, tmp_path)
    assert problem is None, f"{case.name}: {problem}\nstderr: {run.err}"
