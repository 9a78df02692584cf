"""What a model folder must be before any number is computed from it, and what identifies it.

Each folder here is built from the real converted SmolLM2 (its weights, config and tokenizer),
with one thing wrong: a weight missing or extra, a vocabulary smaller than the tokenizer's,
NaN weights, a tokenizer changed after results were stored, a converted file changed in place.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from evalcore import checkpoint, models
from evalcore.errors import InputError, ModelUnavailableError, NonFiniteError
from evalcore.runs import run_perplexity
from evalcore.store import Store
from tests.support import faults as F

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France."]


def _copy_folder(smol, dst: Path, *, weights=None) -> Path:
    """The converted SmolLM2 folder's config and tokenizer files, with `weights(state_dict)` saved as its weights."""
    src = models.converted_dir(smol.spec)
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name not in ("model.safetensors", "evalcore-meta.json"):
            shutil.copy(p, dst / p.name)
    if weights is None:
        shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    else:
        sd = {k: v.clone() for k, v in load_file(str(src / "model.safetensors")).items()}
        save_file(weights(sd) or sd, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("backend", ["auto", "transformers"])
@pytest.mark.parametrize("change, expect", [
    (lambda sd: sd.__delitem__("model.layers.0.mlp.up_proj.weight"), "1 weight(s) missing"),
    (lambda sd: sd.update({"model.layers.0.mlp.extra.weight": sd["model.norm.weight"].clone()}), "1 unexpected"),
], ids=["missing", "unexpected"])
def test_weights_that_do_not_match_the_config_are_refused(smol, tmp_path, backend, change, expect):
    folder = _copy_folder(smol, tmp_path / "m", weights=change)
    with pytest.raises(ModelUnavailableError, match=re.escape(expect)):
        models.load_model(str(folder), device="cpu", dtype="float32", backend=backend)


def test_a_tied_lm_head_and_a_rope_buffer_are_not_missing_weights(smol, tmp_path):
    """SmolLM2 ties its LM head to the embeddings (no lm_head in the file); an old checkpoint's
    RoPE inv_freq buffer is computed, not learned: both load, with SmolLM2's numbers."""
    def add_buffer(sd):
        sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = sd["model.norm.weight"][:32].clone()

    folder = _copy_folder(smol, tmp_path / "m", weights=add_buffer)
    lm = models.load_model(str(folder), device="cpu", dtype="float32")
    a = run_perplexity(lm, TEXTS[:1], store=Store(tmp_path / "a.sqlite")).metrics.perplexity
    b = run_perplexity(smol, TEXTS[:1], store=Store(tmp_path / "b.sqlite")).metrics.perplexity
    assert a == pytest.approx(b, rel=1e-6)


def test_vocabulary_smaller_than_the_tokenizer_is_refused(smol, tmp_path):
    def shrink(sd):
        sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:1000].clone()

    folder = _copy_folder(smol, tmp_path / "m", weights=shrink)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": 1000}))
    with pytest.raises(ModelUnavailableError, match="tokenizer has ids up to 49151 but the model has 1000"):
        models.load_model(str(folder), device="cpu", dtype="float32")


def test_nan_weights_give_one_line_and_store_nothing(smol, tmp_path):
    """A model whose numbers are NaN: the CLI exits 2 naming the text and the token, no row is
    stored, no JSON written. (The CLI in this process, `clirun.cli_in_process`: the folder is a
    model of its own, loaded as a child would; no child start-up.)"""
    def poison(sd):
        sd["model.norm.weight"][:] = float("nan")

    folder = _copy_folder(smol, tmp_path / "m", weights=poison)
    db, out = tmp_path / "s.sqlite", tmp_path / "o.json"
    run = F.cli_in_process(["perplexity", "--model", str(folder), "--corpus", "wikipedia", "--limit", "2",
                            "--store", str(db), "--out", str(out)])
    assert F.one_line_error(run) is None, run.err
    assert re.search(r"text \d: a token.s NLL is nan at position \d+; nothing was stored", run.err), run.err
    assert F.rows(db) == 0 and not out.exists()


def test_nan_scores_are_refused_in_process(smol, tmp_path, monkeypatch):
    from evalcore import scoring

    real = scoring.token_nlls

    def nan_second(*a, **k):
        out = real(*a, **k)
        out[-1] = np.array(out[-1], dtype=float)
        out[-1][3] = np.inf
        return out

    monkeypatch.setattr(scoring, "token_nlls", nan_second)
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(NonFiniteError, match="a token's NLL is inf at position 3"):
        run_perplexity(smol, TEXTS, store=store, batch_tokens=10_000)
    assert store.count() == 0


def test_tokenizer_change_changes_the_fingerprint_and_the_results(smol, tmp_path):
    """Results are keyed by the folder's content: a tokenizer.json changed in place (a Lowercase
    normaliser added) is a new model, scored anew, never the old rows served."""
    folder = _copy_folder(smol, tmp_path / "m")
    store = Store(tmp_path / "s.sqlite")
    lm = models.load_model(str(folder), device="cpu", dtype="float32")
    first = run_perplexity(lm, ["Paris Is The Capital Of France."], store=store)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["normalizer"] = {"type": "Lowercase"}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    lm2 = models.load_model(str(folder), device="cpu", dtype="float32")
    assert lm2 is not lm and lm2.fingerprint != lm.fingerprint
    second = run_perplexity(lm2, ["Paris Is The Capital Of France."], store=store)
    assert second.cached_texts == 0 and second.texts[0].ids != first.texts[0].ids
    again = run_perplexity(models.load_model(str(folder), device="cpu", dtype="float32"),
                           ["Paris Is The Capital Of France."], store=store)
    assert again.cached_texts == 1  # unchanged content: the same key, read back


@pytest.mark.parametrize("name", ["config.json", "generation_config.json", "tokenizer_config.json", "model.safetensors"])
def test_every_file_that_changes_a_number_is_in_the_fingerprint(smol, tmp_path, name):
    folder = _copy_folder(smol, tmp_path / "m")
    before = checkpoint.folder_fingerprint(folder)
    with open(folder / name, "ab") as f:
        f.write(b" ")
    assert checkpoint.folder_fingerprint(folder) != before


def test_fingerprint_is_content_not_place_or_time(smol, tmp_path):
    a = _copy_folder(smol, tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.utime(b / "config.json", (1, 1))
    assert checkpoint.folder_fingerprint(a) == checkpoint.folder_fingerprint(b)


def test_converted_file_changed_in_place_is_caught(smol, tmp_path):
    """Random bytes written into the middle of the converted weights (size unchanged) make the
    folder incomplete, so it is rebuilt; a copy (new inode and mtime, same bytes) is re-hashed
    once and accepted."""
    dst = tmp_path / "copy"
    shutil.copytree(models.converted_dir(smol.spec), dst)
    assert models.is_complete(dst)  # new inode: hashed, equal, the record renewed
    meta = json.loads((dst / "evalcore-meta.json").read_text())
    assert meta["files"]["model.safetensors"]["ino"] == (dst / "model.safetensors").stat().st_ino
    size = (dst / "model.safetensors").stat().st_size
    with open(dst / "model.safetensors", "r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(0).bytes(4096))
    assert (dst / "model.safetensors").stat().st_size == size
    assert not models.is_complete(dst)


def test_corrupt_converted_weights_are_rebuilt_and_give_the_clean_numbers(smol, tmp_path):
    """End to end on a cache of its own: the converted SmolLM2 is damaged in place (same size);
    the next run says so, converts again and scores exactly as a clean run. It starts from a
    copy of the session's converted folder (the smol fixture made it): one conversion, the one
    under test."""
    o = F.corrupt_converted_weights(tmp_path)
    assert o.survived, o.explain()


# ----------------------------------------------------------------------------- the app's folder box

def test_app_model_box_resolves_paths_before_the_allowed_roots(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    (allowed / "inside").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    monkeypatch.setenv("EVALCORE_MODEL_DIRS", str(allowed))
    monkeypatch.chdir(tmp_path)
    for name in ("allowed/../outside", "allowed/escape", str(allowed / "escape"), "outside",
                 "allowed/inside/../../outside"):
        with pytest.raises(InputError, match="outside the folders this app may read"):
            models.check_app_model(name)
    with pytest.raises(ModelUnavailableError, match="no config.json"):  # inside: it passes the roots check
        models.check_app_model("allowed/inside")
