#!/usr/bin/env bash
# A test-only environment with lm-evaluation-harness, for tests/runs/test_lmeval_live.py (and for
# regenerating tests/fixtures/lm_eval/): a venv whose own site-packages hold lm-eval and its extra
# dependencies, layered over the project's .venv (torch, transformers, datasets come from there;
# nothing is installed into .venv).
#
#   bash bench/lmeval_env.sh [VENV_DIR]        # default /tmp/lmeval-venv
#   export EVALCORE_LMEVAL_PYTHON=VENV_DIR/bin/python
#   HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m pytest -q tests/runs/test_lmeval_live.py
#
# `python -m venv --system-site-packages` run from .venv's python would expose the base
# interpreter's packages, not .venv's; a .pth file naming .venv's site-packages does that instead
# (after the venv's own, so lm-eval's pins win where they differ).
set -euo pipefail

LM_EVAL_VERSION=0.4.13  # the version that wrote tests/fixtures/lm_eval/
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="$ROOT/.venv/bin/python"
VENV="${1:-/tmp/lmeval-venv}"

[ -x "$BASE" ] || { echo "lmeval_env.sh: $BASE not found; create the project's .venv first" >&2; exit 2; }
"$BASE" -m venv "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$BASE" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/evalcore-venv.pth"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "lm-eval==$LM_EVAL_VERSION"
"$VENV/bin/python" -c 'import lm_eval, torch, transformers; print("lm-eval", lm_eval.__version__ if hasattr(lm_eval, "__version__") else "'"$LM_EVAL_VERSION"'", "| torch", torch.__version__, "| transformers", transformers.__version__)'
echo "export EVALCORE_LMEVAL_PYTHON=$VENV/bin/python"
