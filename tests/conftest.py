"""Shared fixtures: the real bundled models, loaded once per test session; and the `slow` mark.

The folders mirror the package (store/, models/, cli/, runs/, app/); support/ holds the fault
injection and app-server helpers that tests and bench/ share, imported as the package
`tests.support` (pytest puts the repository root on sys.path for this package's conftest;
the bench runs from the root: `python -m bench.reliability_report`).

Converted weights live in the user cache folder (EVALCORE_CACHE or ~/.cache/evalcore), so
the first run on a fresh machine converts the GGUFs once; stores are per test.

A test is `slow` when it uses a model fixture or lives in a module that runs models, servers
or CLI processes (SLOW_MODULES). `make check` runs the others (`-m "not slow"`): the store,
the metrics, argument and output handling, the app's helpers; `make test` runs everything, in
two pytest-xdist workers that each take whole modules, the longest first (LONGEST_FIRST).
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MODEL_FIXTURES = {"smol", "gemma", "hellaswag", "reference", "ref"}
SLOW_MODULES = {"test_app", "test_bad_input", "test_browser", "test_cli_out", "test_distributed", "test_faults", "test_first_use",
                "test_hellaswag", "test_live", "test_load", "test_model_folders", "test_models", "test_native"}


# The modules that take longest, longest first (about 2-3 minutes of one worker down to ~30 s).
# With two workers (`make test`: pytest-xdist, one module at a time to a worker, in this order)
# the long ones start first and the short ones fill in at the end, so both workers end together.
LONGEST_FIRST = ["test_native", "test_crosskl", "test_hellaswag", "test_faults", "test_generate", "test_browser",
                 "test_distributed", "test_models", "test_model_folders", "test_load", "test_live", "test_first_use",
                 "test_mauve", "test_lmeval_live", "test_bad_input", "test_perplexity_kl", "test_app"]


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _module(item) in SLOW_MODULES or MODEL_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item), len(rank)))  # stable: a module's own order is kept


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker takes its share of the cores for torch's threads (one each for two
    workers on two cores), and so do the processes its tests start (CLI runs, torchrun ranks, app
    servers: OMP_NUM_THREADS), so that no forward pass spins waiting for a core the other worker
    holds."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        import torch

        torch.set_num_threads(share)


@pytest.fixture(scope="session")
def smol():
    from evalcore.models import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def gemma():
    from evalcore.models import load_model

    return load_model("gemma3-270m", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def hellaswag():
    from evalcore.data import HellaSwag

    return HellaSwag()


HELLASWAG_REFERENCE_ITEMS = 24


@pytest.fixture(scope="session")
def hellaswag_reference(smol, hellaswag, tmp_path_factory):
    """SmolLM2 on HellaSwag items 0..23 in this process, in a store of its own (`to_dict()`, the
    CLI's JSON less its run details): the yardstick of the CLI and torchrun runs of those items,
    computed once per session."""
    from evalcore.runs import run_hellaswag
    from evalcore.store import Store

    store = Store(tmp_path_factory.mktemp("hellaswag_ref") / "single.sqlite")
    res = run_hellaswag(smol, range(HELLASWAG_REFERENCE_ITEMS), dataset=hellaswag, store=store)
    store.close()
    return res.to_dict()


@pytest.fixture
def store(tmp_path):
    from evalcore.store import Store

    s = Store(tmp_path / "results.sqlite")
    yield s
    s.close()
