# Two commands do everything on a fresh machine (virtual environment, dependencies,
# bundled models and data); both are fast when nothing changed.
#   make app    the Streamlit app on the embedded default (bundled models, offline)
#   make test   the whole test suite
#   make check  the type checks and the quick tests (no model loaded), under a minute
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: app test check types bench cloud-rehearsal install bundle chromium lmeval-env clean
install: $(STAMP)

# requirements.txt is also Streamlit Cloud's manifest; its PyTorch index line is left out
# here (that index is not reachable from this machine; the same CPU wheel lies on local disk).
$(STAMP): requirements.txt requirements-bundle.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	grep -v -e '^--extra-index-url' requirements.txt > $(VENV)/requirements-local.txt
	$(PY) -m pip install -q --disable-pip-version-check -r $(VENV)/requirements-local.txt -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-bundle.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, transformers, streamlit, evalcore"
	touch $@

bundle: $(STAMP)

# Debian's Chromium for the browser test (never a browser downloaded by a test tool)
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# lm-evaluation-harness in a test-only venv over .venv's packages, for the test that imports a
# real lm-eval run (tests/runs/test_lmeval_live.py); never installed into .venv
LMEVAL_VENV := .venv-lmeval
$(LMEVAL_VENV)/.installed: bench/lmeval_env.sh $(STAMP)
	bash bench/lmeval_env.sh $(LMEVAL_VENV) 2>&1 | grep -v -e "^WARNING: Location" -e "^export " || true
	$(LMEVAL_VENV)/bin/python -c "import lm_eval"
	touch $@
lmeval-env: $(LMEVAL_VENV)/.installed

app: $(STAMP)
	$(VENV)/bin/streamlit run app.py

# two pytest-xdist workers (make test, make check), each given whole modules, the longest first
# (tests/conftest.py): a module's fixtures (a server, a model) stay in one process, in order
TEST_WORKERS ?= 2
test: $(STAMP) chromium lmeval-env types
	EVALCORE_LMEVAL_PYTHON=$(abspath $(LMEVAL_VENV))/bin/python HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

check: $(STAMP) types
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" tests

# the package type-checks: strict where the data flows (metrics, store, runs, cli), default elsewhere;
# each with a cache of its own (one cache shared by both settings was rebuilt on every run)
types: $(STAMP)
	$(PY) -m mypy evalcore
	$(PY) -m mypy --strict --cache-dir .mypy_cache/strict evalcore/metrics evalcore/store evalcore/runs evalcore/cli

bench: $(STAMP)
	$(PY) -m pip install -q -r bench/requirements-bench.txt 2>&1 | grep -v "^WARNING: Location" || true
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) bench/load_speed.py
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) bench/hellaswag_throughput.py
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) bench/perplexity_throughput.py
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) bench/mauve_speed.py

# Streamlit Community Cloud rehearsed here (root, one core, a 2.7 GB cap): see bench/cloud_rehearsal.py
cloud-rehearsal: $(STAMP) chromium
	$(PY) -m pip install -q "uv>=0.9,<1" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) bench/cloud_rehearsal.py

clean:
	rm -rf $(VENV) $(LMEVAL_VENV)
