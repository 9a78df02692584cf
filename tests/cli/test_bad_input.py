"""Bad CLI input: each case exits 2 with one line on stderr, no traceback, and no model load.

The cases live in `tests/support/faults.py` (BAD_INPUTS), shared with `bench/reliability_report.py`.
A guard replaces model loading with an error (exit 3), so a case that would load a model
before noticing the bad input fails here.
"""
from __future__ import annotations

import pytest
from faults import BAD_INPUTS, run_bad_input


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.name for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(case, tmp_path):
    run, problem = run_bad_input(case, tmp_path)
    assert problem is None, f"{case.name}: {problem}\nstderr: {run.err}"
