"""The app: every page renders without an exception, and moving a slider moves the number."""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import lab_cache as lc
from evalcore import runs

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # first visits generate and score on a CPU; later ones read the store
# Markdown a user might type or name a file with: it must be shown as these characters
HOSTILE_NAME = "**bold** [link](http://example.invalid) ![img](http://example.invalid/x.png)"
HOSTILE_FILE = "![x](http://example.invalid/y.png).txt"


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


def _charts(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of the page's charts."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _bound(at: AppTest, selection: str) -> dict:
    """The starting values of a chart's range inputs (a point selection bound to them)."""
    def walk(part):
        yield part
        for name in ("hconcat", "vconcat", "layer"):
            for sub in part.get(name, []):
                yield from walk(sub)

    for spec in _charts(at):
        for part in walk(spec):
            for p in part.get("params", []):
                if p.get("name") == selection:
                    return p["value"][0]
    raise AssertionError(f"no chart binds {selection}")


def _open(path: str, **query: str) -> AppTest:
    """A page opened from a link with these query parameters."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(query)
    at.switch_page(path)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_kl_page_charts_start_from_the_link():
    """The simplex and Bregman sliders are the charts' range inputs (their numbers are checked
    against evalcore in the browser, tests/app/test_live.py); a link sets where they start."""
    at = _open("app_pages/kl.py", pa="0.9", qb="0.1", eps="0.001", bp="0.7")
    assert not at.warning
    assert _bound(at, "pq") == {"pa": 0.9, "pb": 0.3, "qa": 0.3, "qb": 0.1, "log_eps": -3.0}
    assert _bound(at, "breg") == {"p": 0.7, "q": 0.4}
    assert any("mean KL(P‖Q)" in m.value for m in at.markdown)  # token-level KL on real models


def test_perplexity_page_window_moves_perplexity():
    at = _page("app_pages/perplexity.py")
    first = _metric(at, "perplexity")
    at.slider(key="ppl_window").set_value(32).run()
    assert not at.exception and _metric(at, "perplexity") != first


def test_hellaswag_page():
    """Accuracy, the five dialects (acc and acc_norm equal to the accuracy chart's), each dialect's
    calibration, and the noise floor of the two models' comparison."""
    at = _open("app_pages/hellaswag.py", pmi="True")  # with acc_mutual_info's pass
    assert any("disagree" in h.value for h in at.subheader)
    acc = next(d.value for d in at.dataframe if "metric" in d.value.columns).set_index(["model", "metric"])["value"]
    dialects = next(d.value for d in at.dataframe if "acc_mutual_info" in d.value.columns).set_index("model")
    assert list(dialects.columns) == ["acc", "acc_norm", "acc_bytes", "acc_tokens", "acc_mutual_info"]
    for m in dialects.index:  # "0.300 [0.10, 0.50]"
        assert float(dialects.loc[m, "acc"].split()[0]) == round(acc[m, "acc"], 3)
        assert float(dialects.loc[m, "acc_norm"].split()[0]) == round(acc[m, "acc_norm"], 3)
    cal = next(d.value for d in at.dataframe if "ECE" in d.value.columns)
    assert len(cal) == 2 * 5 and cal["ECE"].between(0, 1).all() and cal["Brier"].between(0, 2).all()
    assert (cal["NLL (nats)"] > 0).all()
    assert {m.label for m in at.metric} >= {"smallest difference these items detect",
                                             "items needed for the measured difference"}


def test_mauve_page_k_contexts_and_link():
    at = _open("app_pages/mauve.py", alpha="0.3", k="12")
    assert not at.warning
    assert at.slider(key="mauve_k").value == 12 and _bound(at, "mix") == {"alpha": 0.3}
    score = _metric(at, "MAUVE")
    at.slider(key="mauve_k").set_value(3).run()
    assert not at.exception and _metric(at, "MAUVE") != score  # new clusters, new histograms
    assert 0 < float(_metric(at, "MAUVE")) <= 1 and _bound(at, "mix") == {"alpha": 0.3}
    estimators = {m.label: float(m.value) for m in at.metric if m.label in ("nearest neighbours", "classifier")}
    assert len(estimators) == 2 and all(0 < v <= 1 for v in estimators.values())
    assert any(h.value == "MAUVE against the number of texts" for h in at.subheader)
    at.slider(key="mauve_k").set_value(30).run()
    at.select_slider(key="mauve_n").set_value(40).run()  # 40 + 40 texts: k goes up to 20, the engine's limit
    assert at.slider(key="mauve_k").max == 20 and at.slider(key="mauve_k").value == 20
    assert not at.exception and not at.error and 0 < float(_metric(at, "MAUVE")) <= 1


def test_a_bad_link_opens_the_defaults_with_one_line():
    at = _open("app_pages/mauve.py", alpha="2", k="twelve", model="**no-such-model**", colour="red")
    assert len(at.warning) == 1
    shown = _shown(at.warning[0].value)
    assert all(s in shown for s in ("alpha='2'", "k='twelve'", "**no-such-model**", "colour")), shown
    assert "**no" not in at.warning[0].value  # shown as text
    assert at.slider(key="mauve_k").value == 8 and _bound(at, "mix") == {"alpha": 0.5}


def test_kl_page_when_a_takes_all_the_probability():
    """P(A) = Q(A) = 1 from a link: the chart starts there (its P(B) is capped at what A leaves)."""
    at = _open("app_pages/kl.py", pa="1", qa="1.0")
    assert _bound(at, "pq")["pa"] == 1.0 and _bound(at, "pq")["qa"] == 1.0


def test_small_vs_large_page_starts_idle():
    at = _page("app_pages/small_vs_large.py")
    assert at.button(key="svl_go")


def _heatmaps(at: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """The per-character heatmaps on the page: (Vega-Lite spec, its cells)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    charts = [(json.loads(c.proto.spec), c.proto) for c in at.get("vega_lite_chart")]
    return [(spec, convert_arrow_bytes_to_pandas_df(proto.datasets[0].data.data))
            for spec, proto in charts if "at each character" in str(spec.get("title"))]


def test_kl_page_compares_two_models_per_byte_on_a_short_text():
    """Any two models, whatever their tokenizers: a heatmap over the characters of a short text,
    finite sums; a text over 200 bytes is one error line; the corpus measures wait for a button."""
    at = _page("app_pages/kl.py")
    assert [at.selectbox(key="kl_x_p").value, at.selectbox(key="kl_x_q").value] == lc.headline_pair()
    heat = _heatmaps(at)
    assert len(heat) == 1 and "KL(P‖Q)" in heat[0][0]["title"]
    cells = heat[0][1]
    assert cells["char"].iloc[-1] == "end" and len(cells) == len(at.text_area(key="kl_x_text").value) + 1
    assert cells["value"].map(math.isfinite).all() and cells["value"].max() > 0
    sums = next(d.value for d in at.dataframe if "sum over positions (nats)" in d.value.columns)
    assert sums["divergence"].tolist() == ["KL(P‖Q)", "KL(Q‖P)", "JS"]
    assert sums.iloc[:, 1:].map(math.isfinite).all().all() and (sums.iloc[:, 1] > 0).all()
    assert any("not comparable with the token-level KL" in c.value for c in at.caption)
    assert at.button(key="kl_x_gap_go") and at.button(key="kl_x_mc_go")  # nothing runs before they are pressed
    at.radio(key="kl_x_div").set_value("JS").run()
    assert not at.exception and _heatmaps(at)[0][0]["title"].startswith("JS") and at.query_params["div"] == "js"
    at.text_area(key="kl_x_text").input("x" * 201).run()
    assert _errors(at) == ("the text is 201 UTF-8 bytes; the per-byte comparison takes at most 200: shorten it, "
                           "or compare the models on a corpus below")
    assert not _heatmaps(at)
    assert at.title[0].value == "KL divergence" and at.button(key="kl_x_gap_go")  # the rest of the page is there


def test_small_vs_large_page_measures_kl_between_the_pair():
    """After the button: KL(small‖large) and KL(large‖small) measured directly (Monte-Carlo, per
    byte, with an interval) beside each model's histogram KL to human text."""
    at = _open("app_pages/small_vs_large.py", items="40", contexts="40", prompts="10")
    at.button(key="svl_go").click().run()
    assert not _errors(at)
    table = next(d.value for d in at.dataframe if "KL" in d.value.columns)
    small, large = lc.headline_pair()
    direct = table[table["KL"].str.contains("measured directly")]
    assert direct["KL"].tolist() == [f"KL({a}‖{b}), measured directly" for a, b in ((small, large), (large, small))]
    assert direct["value"].map(math.isfinite).all() and direct["units"].str.startswith("nats per byte").all()
    assert all(lo <= v <= hi for v, (lo, hi) in zip(direct["value"], direct["95% interval"].map(json.loads)))
    assert table["KL"].str.contains("MAUVE cluster histograms").sum() == 2
    assert any("Monte-Carlo KL per byte" in c.value for c in at.caption)
    # each measured difference of the pair, with its paired interval and a verdict that follows from it
    per_model = next(d.value for d in at.dataframe if "parameters (M)" in d.value.columns).set_index("model")
    verdicts = next(d.value for d in at.dataframe if "verdict" in d.value.columns).set_index("measure")
    assert [m.split(" (")[0].split(",")[0] for m in verdicts.index] == [
        "HellaSwag acc", "HellaSwag acc_norm", "MAUVE", "KL(human‖model)", "bits/byte"]
    for measure, row in verdicts.iterrows():
        assert math.isclose(row["difference"], row[large] - row[small], abs_tol=1e-9), measure
        if row["95% interval"]:
            lo, hi = json.loads(row["95% interval"].replace("+", ""))
            named = small if hi < 0 else large if lo > 0 else None
            assert (row["verdict"] == "not distinguishable at this n") == (named is None), (measure, row["verdict"])
            assert named is None or row["verdict"].startswith(named)
    mauve = verdicts.loc[verdicts.index.str.startswith("MAUVE")].iloc[0]
    # the paired bootstrap's point estimates are the MAUVE labs' own fits (same features, seeds and k)
    assert mauve[small] == per_model.loc[small, "MAUVE"] and mauve[large] == per_model.loc[large, "MAUVE"]
    assert verdicts.loc[verdicts.index.str.startswith("HellaSwag acc ("), small].iloc[0] == per_model.loc[small, "HellaSwag acc"]


def _shown(markdown: str) -> str:
    """What the user reads of a Markdown body of escaped text (`lab_cache.md_escape`)."""
    return re.sub(r"\\(.)", r"\1", markdown, flags=re.S).replace(lc.WORD_JOINER, "")


def _errors(at: AppTest) -> str:
    """The st.error lines as the user reads them."""
    assert not at.exception, [e.value for e in at.exception]
    return " | ".join(_shown(e.value) for e in at.error)


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
    ("app_pages/../../../../etc", "outside the folders this app may read"),  # resolved before the check
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
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    monkeypatch.setenv("EVALCORE_MODEL_DIRS", str(tmp_path))
    at = _page("app_pages/perplexity.py")
    at.selectbox(key="ppl_model").set_value("other: a hub id or a local folder…").run()
    at.text_input(key="ppl_model_other").input(str(folder)).run()
    assert "safetensors only" in _errors(at)


def test_user_text_is_shown_as_text():
    """A typed model name and an uploaded file's name reach st.error escaped: the user sees
    the characters, never bold text, a link or an image that the browser would fetch."""
    at = _page("app_pages/perplexity.py")
    at.selectbox(key="ppl_model").set_value(lc.OTHER).run()
    at.text_input(key="ppl_model_other").input(HOSTILE_NAME).run()
    assert HOSTILE_NAME in _errors(at)  # quoted by evalcore's message
    body = " | ".join(e.value for e in at.error)  # the Markdown sent to the browser
    assert lc.md_escape(HOSTILE_NAME) in body, body
    assert r"\*\*bold\*\*" in body and r"\!\[img\]\(http" in body
    assert "**bold**" not in body and "](http" not in body
    at.selectbox(key="ppl_model").set_value("smollm2-135m").run()
    at.file_uploader(key="ppl_upload").upload(HOSTILE_FILE, b" \n", "text/plain").run()
    assert "empty" in _errors(at) and HOSTILE_FILE in _errors(at)
    body = " | ".join(e.value for e in at.error)
    assert lc.md_escape(HOSTILE_FILE) in body and "![x](" not in body, body


def test_unexpected_error_is_one_line_and_the_page_keeps_working(monkeypatch, caplog):
    """Not an EvalcoreError: one st.error naming the step and the exception type, not its
    message (server paths); the traceback is in the server log; the rest of the page renders."""
    at = _page("app_pages/perplexity.py")

    def broken(*args, **kwargs):
        raise RuntimeError("/srv/private/weights.safetensors is broken")

    monkeypatch.setattr(runs, "run_perplexity", broken)
    at.radio(key="ppl_source").set_value("my own text").run()
    with caplog.at_level(logging.ERROR, logger="lab_cache"):
        at.text_area(key="ppl_text").input("Only this test scores this text: no cached result hides the fault.").run()
    assert _errors(at) == "Scoring texts failed unexpectedly (RuntimeError); the details are in the server log."
    assert at.title[0].value == "Perplexity" and at.slider(key="ppl_window").value == 256  # the page is still there
    assert any(r.exc_info and "/srv/private" in str(r.exc_info[1]) for r in caplog.records if r.name == "lab_cache")
    monkeypatch.undo()
    at.run()  # the same text again: a failure is not cached
    assert not _errors(at) and float(_metric(at, "perplexity")) > 1
