"""HellaSwag dialects on hand-checked arrays (the same on real items: tests/runs/test_hellaswag_dialects.py)."""
from __future__ import annotations

import numpy as np
import pytest

from evalcore.errors import InputError
from evalcore.metrics import dialects as dia
from evalcore.metrics import hellaswag as hsm

# two items, three endings; each column chosen so that one dialect flips the pick
LL = np.array([[-10.0, -12.0, -30.0],
               [-8.0, -9.0, -20.0]])
CHARS = np.array([[10, 20, 40], [8, 12, 40]])  # acc_norm: -1.0, -0.6, -0.75 | -1.0, -0.75, -0.5
BYTES = np.array([[10, 20, 20], [8, 8, 8]])  # acc_bytes: -1.0, -0.6, -1.5  | -1.0, -1.125, -2.5
TOKENS = np.array([[2, 3, 12], [2, 2, 2]])  # acc_tokens: -5, -4, -2.5      | -4, -4.5, -10
UNCOND = np.array([[-5.0, -10.0, -29.0], [-1.0, -5.0, -11.0]])  # mutual info: -5, -2, -1 | -7, -4, -9


def test_each_dialect_picks_its_hand_computed_ending():
    kw = dict(char_len=CHARS, byte_len=BYTES, token_len=TOKENS, loglik_uncond=UNCOND)
    s = dia.dialect_scores(LL, **kw)
    assert list(s) == list(dia.DIALECTS)
    np.testing.assert_allclose(s["acc_norm"], [[-1.0, -0.6, -0.75], [-1.0, -0.75, -0.5]])
    np.testing.assert_allclose(s["acc_bytes"], [[-1.0, -0.6, -1.5], [-1.0, -1.125, -2.5]])
    np.testing.assert_allclose(s["acc_tokens"], [[-5.0, -4.0, -2.5], [-4.0, -4.5, -10.0]])
    np.testing.assert_allclose(s["acc_mutual_info"], [[-5.0, -2.0, -1.0], [-7.0, -4.0, -9.0]])
    p = dia.dialect_predictions(LL, **kw)
    assert {k: v.tolist() for k, v in p.items()} == {
        "acc": [0, 0], "acc_norm": [1, 2], "acc_bytes": [1, 0], "acc_tokens": [2, 0], "acc_mutual_info": [2, 1]}
    # acc and acc_norm are metrics.hellaswag.predictions'
    pred, pred_norm = hsm.predictions(LL, CHARS)
    assert p["acc"].tolist() == pred.tolist() and p["acc_norm"].tolist() == pred_norm.tolist()
    dist = dia.dialect_distributions(LL, **kw)
    np.testing.assert_allclose(dist["acc_tokens"][0], np.exp([-5, -4, -2.5]) / np.exp([-5, -4, -2.5]).sum())


def test_table_and_disagreements():
    kw = dict(char_len=CHARS, byte_len=BYTES, token_len=TOKENS, loglik_uncond=UNCOND)
    t = dia.dialect_table(LL, [0, 2], **kw)
    assert {k: a.value for k, a in t.items()} == {"acc": 0.5, "acc_norm": 0.5, "acc_bytes": 0.0,
                                                  "acc_tokens": 0.0, "acc_mutual_info": 0.0}
    assert t["acc"] == hsm.accuracy(np.array([True, False]))  # the same CI as accuracy()
    p = dia.dialect_predictions(LL, **kw)
    assert dia.disagreements(p).tolist() == [0, 1]
    assert dia.disagreements({"acc": p["acc"], "acc_bytes": p["acc_bytes"]}).tolist() == [0]
    assert dia.disagreements({"acc": p["acc"]}).tolist() == []


def test_missing_inputs_leave_their_dialect_out():
    assert list(dia.dialect_predictions(LL, char_len=CHARS)) == ["acc", "acc_norm"]
    assert list(dia.dialect_predictions(LL, char_len=CHARS, loglik_uncond=UNCOND)) == ["acc", "acc_norm",
                                                                                       "acc_mutual_info"]


@pytest.mark.parametrize("kw,msg", [
    (dict(char_len=CHARS[:1]), "char_len has shape"),
    (dict(char_len=CHARS, byte_len=BYTES * 0), "lengths must be >= 1"),
    (dict(char_len=CHARS, loglik_uncond=UNCOND * np.nan), "NaN"),
])
def test_bad_input(kw, msg):
    with pytest.raises(InputError, match=msg):
        dia.dialect_scores(LL, **kw)
    with pytest.raises(InputError, match="one gold ending per item"):
        dia.dialect_table(LL, [0, 1, 2], char_len=CHARS)
