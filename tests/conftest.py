"""Shared fixtures: the real bundled models, loaded once per test session.

Converted weights live in the user cache folder (EVALCORE_CACHE or ~/.cache/evalcore), so
the first run on a fresh machine converts the GGUFs once (~1.5 min); stores are per test.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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


@pytest.fixture
def store(tmp_path):
    from evalcore.store import Store

    s = Store(tmp_path / "results.sqlite")
    yield s
    s.close()
