"""The app: every page renders without an exception, and moving a slider moves the number."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # first visits generate and score on a CPU; later ones read the store


def _page(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    if path != "app_pages/overview.py":
        at.switch_page(path)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_overview_lists_models():
    at = _page("app_pages/overview.py")
    assert "How far" in at.title[0].value
    head, models = at.dataframe[0].value, at.dataframe[1].value
    assert head["model"].tolist() == ["smollm2-135m", "gemma3-270m"]  # the lesson's small and large, measured
    assert head["HellaSwag acc (40 items)"].between(0, 1).all() and (head["perplexity (Wikipedia)"] > 1).all()
    assert head["bits/byte"].iloc[1] < head["bits/byte"].iloc[0]  # the larger model predicts Wikipedia better
    assert "smollm2-135m" in models["model"].tolist()


def test_kl_page_sliders_move_the_numbers():
    at = _page("app_pages/kl.py")
    before = _metric(at, "KL(P‖Q)")
    at.slider(key="kl_P_a").set_value(0.9).run()
    assert not at.exception
    after = _metric(at, "KL(P‖Q)")
    assert before != after
    assert _metric(at, "KL(Q‖P)") != after  # asymmetric
    assert any("mean KL(P‖Q)" in m.value for m in at.markdown)  # token-level KL on real models


def test_perplexity_page_window_moves_perplexity():
    at = _page("app_pages/perplexity.py")
    first = _metric(at, "perplexity")
    at.slider(key="ppl_window").set_value(32).run()
    assert not at.exception and _metric(at, "perplexity") != first


def test_hellaswag_page():
    at = _page("app_pages/hellaswag.py")
    assert any("disagree" in h.value for h in at.subheader)


def test_mauve_page_alpha_and_k():
    at = _page("app_pages/mauve.py")
    kl = _metric(at, "KL(P‖R_α)")
    at.slider(key="mauve_alpha").set_value(0.2).run()
    assert not at.exception and _metric(at, "KL(P‖R_α)") != kl
    score = _metric(at, "MAUVE")
    at.slider(key="mauve_k").set_value(3).run()
    assert not at.exception and _metric(at, "MAUVE") != score  # new clusters, new histograms
    assert 0 < float(_metric(at, "MAUVE")) <= 1
    at.select_slider(key="mauve_n").set_value(40).run()  # 80 texts
    at.slider(key="mauve_k").set_value(90).run()
    assert not at.exception
    assert any("more than the 80 texts" in e.value for e in at.error), [e.value for e in at.error]
    at.slider(key="mauve_k").set_value(5).run()  # the page keeps working
    assert not at.exception and not at.error and 0 < float(_metric(at, "MAUVE")) <= 1


def test_small_vs_large_page_starts_idle():
    at = _page("app_pages/small_vs_large.py")
    assert at.button(key="svl_go")


def _errors(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    return " | ".join(e.value for e in at.error)


@pytest.mark.parametrize("name, content, expect", [
    ("empty.txt", b"", "empty"),
    ("blank.txt", b"  \n\t \n", "empty"),
    ("binary.txt", bytes(range(256)) * 4, "UTF-8"),
    ("latin1.txt", "café crème brûlée".encode("latin-1"), "UTF-8"),
    ("huge.txt", b"word " * (6 * 2**20 // 5 + 1), "up to 5 MB"),
])
def test_perplexity_page_bad_uploads(name, content, expect):
    at = _page("app_pages/perplexity.py")
    at.file_uploader(key="ppl_upload").upload(name, content, "text/plain").run()
    assert expect in _errors(at)
    at.file_uploader(key="ppl_upload").set_value(None).run()  # the page keeps working
    assert not _errors(at) and float(_metric(at, "perplexity")) > 1


@pytest.mark.parametrize("typed, expect", [
    ("nobody-here/no-such-model-xyz", "offline"),  # a well-formed hub id, not cached, HF_HUB_OFFLINE=1
    ("a/b/c", "unknown model"),
    ("/etc", "outside the folders this app may read"),
    ("../../../../etc", "outside the folders this app may read"),
])
def test_model_box_refuses_bad_names(typed, expect):
    at = _page("app_pages/perplexity.py")
    at.selectbox(key="ppl_model").set_value("other: a hub id or a local folder…").run()
    at.text_input(key="ppl_model_other").input(typed).run()
    assert expect in _errors(at)
    at.selectbox(key="ppl_model").set_value("smollm2-135m").run()
    assert not _errors(at) and float(_metric(at, "perplexity")) > 1


def test_model_box_refuses_pickle_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    monkeypatch.setenv("EVALCORE_MODEL_DIRS", str(tmp_path))
    at = _page("app_pages/perplexity.py")
    at.selectbox(key="ppl_model").set_value("other: a hub id or a local folder…").run()
    at.text_input(key="ppl_model_other").input(str(folder)).run()
    assert "safetensors only" in _errors(at)
