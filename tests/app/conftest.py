"""The app's tests run the app's code in this process (AppTest, lab_cache): its start-up makes
the process a server's (`runtime.prefer_small_memory`: glibc's own malloc thresholds, freed
heap returned after each heavy call). The tests that follow in the same process measure the
CLI's behaviour, with evalcore's tuned allocator; it is put back after each app module."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _cli_allocator_after_the_app():
    from evalcore import runtime

    yield
    if runtime._malloc_tuned is False:  # the app chose glibc's defaults: tune again, as a CLI run would
        runtime._malloc_tuned = None
        runtime.tune_cpu_allocator()
