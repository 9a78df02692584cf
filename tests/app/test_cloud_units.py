"""What the app does differently on Streamlit Community Cloud, without a server: a gated model
without a token is not offered and says how to get one, the lesson's pair falls back to the
ungated SmolLM2 135M / 360M, larger models load in bfloat16, models that would not fit the
box are not offered, heavy work takes turns per model, and the memory a container allows is
read from its cgroup."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lab_cache as lc
from evalcore.models import REGISTRY, ModelSpec, availability, total_memory_bytes
from tests.support.cgroup import MemoryGroup

ROOT = Path(__file__).resolve().parents[2]
GATED = ModelSpec("gated-test", "gemma3", 268, "gemma3", "google/gemma-3-270m", gated=True)


@pytest.fixture
def online_without_token(monkeypatch, tmp_path):
    """The hub reachable (as on Cloud), no token in the environment or a token file, an empty
    hub cache: nothing here touches the network, availability only looks."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_a_gated_model_without_a_token_is_unavailable_and_says_what_to_do(online_without_token, monkeypatch):
    a = availability(GATED)
    assert not a.ok and a.source == "gated"
    assert "https://huggingface.co/google/gemma-3-270m" in a.detail and "HF_TOKEN" in a.detail
    assert "Secrets" in a.detail
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    a = availability(GATED)
    assert a.ok and a.source == "hub"


def test_ungated_hub_models_stay_available_online(online_without_token):
    a = availability(REGISTRY["smollm2-360m"])
    assert a.ok and a.source == "hub"


def test_the_pair_falls_back_to_smollm2_without_a_token(monkeypatch):
    online = ["smollm2-135m", "pythia-160m", "smollm2-360m", "gpt2-medium"]  # what Cloud offers without a token
    monkeypatch.setattr(lc, "available", lambda: online)
    assert lc.headline_pair() == ["smollm2-135m", "smollm2-360m"]
    monkeypatch.setattr(lc, "available", lambda: ["smollm2-135m", "gemma3-270m", "smollm2-360m"])
    assert lc.headline_pair() == ["smollm2-135m", "gemma3-270m"]
    monkeypatch.setattr(lc, "available", lambda: ["pythia-70m", "gpt2"])
    assert lc.headline_pair() == ["pythia-70m", "gpt2"]


def test_larger_models_load_in_bfloat16():
    assert lc.app_dtype("smollm2-135m") == "float32"
    assert lc.app_dtype("gemma3-270m") == "bfloat16"
    assert lc.app_dtype("smollm2-360m") == "bfloat16"
    assert lc.app_dtype("/some/local/folder") == "float32"


def test_models_that_would_not_fit_are_not_offered(online_without_token, monkeypatch):
    lc.available.clear()
    monkeypatch.setenv("EVALCORE_MEMORY_LIMIT_GB", "2.7")  # Cloud's largest box
    try:
        names = lc.available()
    finally:
        lc.available.clear()
    assert {"smollm2-135m", "smollm2-360m", "pythia-410m"} <= set(names)
    assert not {"gpt2-large", "gpt2-xl", "pythia-1b", "pythia-1.4b", "smollm2-1.7b"} & set(names)
    assert names == sorted(names, key=lc.params)


def test_turns_are_first_come_first_served_and_tell_each_waiter_its_place():
    turns = lc.Turns()
    order, places = [], {}
    hold = threading.Event()

    def visitor(name: str) -> None:
        with turns.turn("m", on_wait=lambda place: places.setdefault(name, set()).add(place)):
            order.append(name)
            if name == "A":
                hold.wait(5)

    a = threading.Thread(target=visitor, args=("A",))
    a.start()
    time.sleep(0.1)
    b = threading.Thread(target=visitor, args=("B",))
    b.start()
    time.sleep(0.1)
    c = threading.Thread(target=visitor, args=("C",))
    c.start()
    time.sleep(0.6)
    with turns.turn("other model"):  # another model's line does not wait on this one
        pass
    hold.set()
    for t in (a, b, c):
        t.join(5)
    assert order == ["A", "B", "C"]
    assert places["B"] == {1} and 2 in places["C"]
    assert "A" not in places


def test_a_waiter_that_leaves_the_line_does_not_block_the_next():
    turns = lc.Turns()
    hold = threading.Event()
    got = []

    def first() -> None:
        with turns.turn("m"):
            hold.wait(5)

    def leaver() -> None:
        def stop(place: int) -> None:
            raise RuntimeError("the visitor left (Streamlit stopped the script)")
        with pytest.raises(RuntimeError), turns.turn("m", on_wait=stop):
            pass

    def last() -> None:
        with turns.turn("m"):
            got.append("last")

    t1 = threading.Thread(target=first)
    t1.start()
    time.sleep(0.1)
    t2 = threading.Thread(target=leaver)
    t2.start()
    t2.join(5)
    t3 = threading.Thread(target=last)
    t3.start()
    time.sleep(0.3)
    hold.set()
    for t in (t1, t3):
        t.join(5)
    assert got == ["last"]


CGROUP_CHILD = """
from evalcore.models import total_memory_bytes, free_memory_bytes
print(total_memory_bytes(), free_memory_bytes("cpu"))
"""


def test_a_containers_memory_limit_is_read_from_its_cgroup(tmp_path):
    try:
        group = MemoryGroup(f"evalcore-test-{os.getpid()}", 1536 * 2**20)
    except OSError:
        pytest.skip("needs root and cgroup v1's memory controller (the test machines have both)")
    with group:
        out = subprocess.run(group.wrap([sys.executable, "-c", CGROUP_CHILD]), cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    total, free = map(int, out)
    assert total == 1536 * 2**20  # the cap, not the machine's RAM
    assert 0 < free < total
    assert total_memory_bytes() > total  # this process is not in the group


CACHE_CHILD = """
import sys
from evalcore.models import free_memory_bytes
before = free_memory_bytes("cpu")
with open(sys.argv[1], "rb") as f:  # read once: page cache charged to the group, then inactive
    while f.read(1 << 24):
        pass
print(before, free_memory_bytes("cpu"))
"""


def test_file_cache_the_kernel_can_drop_does_not_count_as_used(tmp_path):
    """A file read once (e.g. weights while converting them) fills the group's page cache; the
    kernel drops it before refusing anything, so a model load must not be refused for it."""
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(40):
            f.write(os.urandom(1 << 24))  # 640 MiB
    fd = os.open(big, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # not cached outside the group
    os.close(fd)
    try:
        group = MemoryGroup(f"evalcore-test-{os.getpid()}", 1536 * 2**20)
    except OSError:
        pytest.skip("needs root and cgroup v1's memory controller (the test machines have both)")
    with group:
        out = subprocess.run(group.wrap([sys.executable, "-c", CACHE_CHILD, str(big)]), cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    before, after = map(int, out)
    assert after > before - 200 * 2**20, (before, after)  # not the 640 MiB just read


def test_work_on_two_models_holds_both_turns():
    """A two-model measure (per-byte KL) waits for both models' turns; one model on both sides
    takes its turn once."""
    memo, turns = lc.Memo(max_entries=8), lc.Turns()
    inside, release, done, places = threading.Event(), threading.Event(), [], []

    def pair() -> None:
        def compute() -> str:
            inside.set()
            release.wait(5)
            done.append("pair")
            return "pair"
        memo.get(("pair",), compute, turns=(turns, ("b", "a")))

    t1 = threading.Thread(target=pair)
    t1.start()
    assert inside.wait(5)
    t2 = threading.Thread(target=lambda: memo.get(("a",), lambda: done.append("a"),
                                                  progress=lambda place, _: places.append(place), turns=(turns, "a")))
    t2.start()
    time.sleep(0.6)
    assert done == [] and places and set(places) == {1}  # "a" is taken by the pair: place 1 in its line
    release.set()
    for t in (t1, t2):
        t.join(5)
    assert done == ["pair", "a"]
    assert memo.get(("self",), lambda: "same model", turns=(turns, ("a", "a"))) == "same model"


def test_a_load_that_would_not_fit_first_unloads_the_models_nobody_is_using(monkeypatch):
    """The refusal is the real one's type; the models, their turns and the unloading are real."""
    from evalcore import models
    from evalcore.errors import NotEnoughMemoryError

    lc._loaded().clear()
    idle = lc._model("smollm2-135m", "bfloat16")  # not float32: the suite's shared model stays loaded
    assert list(lc._loaded()) == [("smollm2-135m", "bfloat16")]
    real, refused = lc.load_model, []

    def tight(name, **kw):
        if name == "gemma3-270m" and not refused:
            refused.append(name)
            raise NotEnoughMemoryError("gemma3-270m needs about 0.6 GiB but 0.4 GiB is free")
        return real(name, **kw)

    monkeypatch.setattr(lc, "load_model", tight)
    held, release = threading.Event(), threading.Event()

    def user():  # another session runs SmolLM2 meanwhile: its models are in use
        with lc._turns().turn("smollm2-135m"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=user)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(NotEnoughMemoryError):  # nothing idle to unload: the refusal stands
            lc._model("gemma3-270m", "bfloat16")
    finally:
        release.set()
        t.join(10)
    refused.clear()
    gemma = lc._model("gemma3-270m", "bfloat16")  # refused once, then loaded after unloading the idle SmolLM2
    assert refused and list(lc._loaded()) == [("gemma3-270m", "bfloat16")] and gemma.dtype == "bfloat16"
    assert models.load_model("smollm2-135m", device="auto", dtype="bfloat16") is not idle  # loaded anew
    lc._loaded().clear()
