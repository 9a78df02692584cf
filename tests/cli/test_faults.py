"""Fault injection on the real CLI: SIGKILL mid-run, a corrupt store, a full disk, a read-only
folder, two processes on one store. Each must end in the clean run's numbers, or in one line
on stderr that says what to do, and never lose a committed row.

The scenarios live in `tests/support/faults.py`, shared with `bench/reliability_report.py`; each
returns an Outcome of named checks. HellaSwag's SIGKILL resume and two-process runs are in
test_hellaswag.py; these cover perplexity, MAUVE generation and the store's disk faults.

Kills, the full disk (a resource limit), the read-only folder (dropped capabilities) and two
processes at once run the real CLI in child processes. The clean reference runs and the runs on
a damaged or locked store run it in this process with the session's SmolLM2
(`faults.cli_shared_models`: the same exit status, stdout, stderr lines and store), which
spares a child's start-up and model load each.
"""
from __future__ import annotations

import pytest

from tests.support import faults as F

KILL_SEED = 7  # seeds the kill point (texts committed before SIGKILL)


IN_PROCESS = F.cli_shared_models


@pytest.fixture(scope="module")
def ref(smol, tmp_path_factory) -> F.Reference:
    """One uninterrupted perplexity run in a fresh store, the yardstick of every fault."""
    return F.reference_perplexity(tmp_path_factory.mktemp("ppl_ref"), runner=IN_PROCESS)


def _check(o: F.Outcome) -> F.Outcome:
    if o.skipped:
        pytest.skip(o.skipped)
    assert o.survived, o.explain()
    return o


def test_perplexity_sigkill_resumes_and_equals_clean_run(ref, tmp_path):
    o = _check(F.perplexity_sigkill(tmp_path, ref, seed=KILL_SEED))
    assert o.rows_before >= 1 and o.rows_lost == 0


def test_mauve_generation_sigkill_resumes_and_equals_clean_run(smol, tmp_path):
    o = _check(F.mauve_sigkill(tmp_path, runner=IN_PROCESS))
    assert o.rows_before == 8  # the first batch of 8 was committed, the second was in flight


@pytest.mark.parametrize("damage", F.DAMAGES)
def test_corrupt_store_is_reported_once_and_recomputed(ref, tmp_path, damage):
    _check(F.corrupt_store(tmp_path, ref, damage, runner=IN_PROCESS))


def test_disk_full_is_one_line_and_keeps_stored_rows(ref, tmp_path):
    _check(F.disk_full(tmp_path, ref))


def test_read_only_store_serves_rows_and_refuses_writes_in_one_line(ref, tmp_path):
    _check(F.read_only(tmp_path, ref))


def test_two_processes_same_perplexity_work(ref, tmp_path):
    _check(F.two_processes(tmp_path, ref))


def test_non_finite_record_is_recomputed_not_served(ref, tmp_path):
    _check(F.non_finite_record(tmp_path, ref, runner=IN_PROCESS))


def test_locked_store_journals_and_loses_nothing(ref, tmp_path):
    _check(F.locked_store(tmp_path, ref, runner=IN_PROCESS))
