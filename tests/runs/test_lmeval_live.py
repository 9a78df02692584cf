"""A real lm-evaluation-harness run, imported: lm_eval scores HellaSwag rows 0..3 with the bundled
SmolLM2 (float32, CPU) through the committed task (tests/fixtures/lm_eval/task/), and its
`--log_samples` file must import and agree with the committed fixture.

lm-eval lives in a test-only environment, never in the project's: build it with
`bash bench/lmeval_env.sh` and point EVALCORE_LMEVAL_PYTHON at its python; skipped otherwise.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evalcore.runs.lmeval import import_lm_eval
from tests.support.clirun import env

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval"
TASK = FIXTURES / "task" / "hellaswag_local.yaml"
DATA = "tests/fixtures/lm_eval/task/hellaswag_val_first8.jsonl"  # as the committed task names it
N_ITEMS = 4
# the same lm-eval, model and weights as the fixture; only the batches differ (4 items, not 8)
LOGLIK_ATOL = 1e-4

LMEVAL_PYTHON = os.environ.get("EVALCORE_LMEVAL_PYTHON")
pytestmark = pytest.mark.skipif(
    not LMEVAL_PYTHON, reason="set EVALCORE_LMEVAL_PYTHON to a python with lm-eval installed: "
                              "`bash bench/lmeval_env.sh` builds one and prints the line to export")


def test_real_lm_eval_run_imports_like_the_fixture(hellaswag, tmp_path):
    from evalcore.models.convert import ensure_converted
    from evalcore.models.registry import resolve_spec

    folder = ensure_converted(resolve_spec("smollm2-135m"))
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    rows = (FIXTURES / "task" / "hellaswag_val_first8.jsonl").read_text().splitlines(keepends=True)[:N_ITEMS]
    (task_dir / "rows.jsonl").write_text("".join(rows))
    yaml = TASK.read_text()
    assert DATA in yaml
    (task_dir / TASK.name).write_text(yaml.replace(DATA, str(task_dir / "rows.jsonl")))
    cmd = [str(LMEVAL_PYTHON), "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={folder},dtype=float32", "--tasks", "hellaswag_local", "--include_path", str(task_dir),
           "--device", "cpu", "--batch_size", "4", "--log_samples", "--output_path", str(tmp_path / "out")]
    run = subprocess.run(cmd, cwd=tmp_path, env={**env(), "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (samples,) = (tmp_path / "out").rglob("samples_hellaswag_local_*.jsonl")

    live = import_lm_eval(samples, dataset=hellaswag)
    committed = import_lm_eval(FIXTURES / "samples_hellaswag_smollm2.jsonl", dataset=hellaswag)
    assert [it.index for it in live.items] == list(range(N_ITEMS))
    assert live.model["name"] == f"lm-eval:{folder}" and live.model["lm_eval_version"]
    assert [(r.pred, r.pred_norm) for r in live.items] == [(r.pred, r.pred_norm) for r in committed.items[:N_ITEMS]]
    np.testing.assert_allclose(live.loglik(), committed.loglik()[:N_ITEMS], rtol=0, atol=LOGLIK_ATOL)
