# Two entry points for a new user (see README): `make demo` and `make test`.
# Outside an active virtual environment both create and use ./.venv.
PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
  PY := python
else
  PY := $(VENV)/bin/python
endif
# The CPU build of torch goes in first so that resolving the project does not pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-floats install install-dev install-browser lint bench fastai-env clean venv

venv:
ifndef VIRTUAL_ENV
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
endif

install: venv
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[all]"

install-dev: venv
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"

# Chromium for tests/test_browser.py, from Debian's packages (Playwright drives it and downloads no browser
# of its own). Without root or apt-get it says what to install; CHROMIUM=/path/to/chrome uses another one.
install-browser:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
		echo "tests/test_browser.py needs Chromium: run 'sudo apt-get install chromium' (or set CHROMIUM)" >&2; \
		exit 1; \
	fi

demo: install
	$(PY) -m pipelines.cli demo

# The float-sensitive tests run a second time on torch's baseline CPU kernels (no AVX2/AVX-512): a test
# that only passes on one instruction set fails here, whatever machine CI lands on.
test: install-dev install-browser
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-floats

test-floats: install-dev
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -m floats -q $(PYTEST_ARGS)

lint: install-dev
	$(PY) -m ruff check embedkit pipelines service tests bench
	$(PY) -m ruff format --check embedkit pipelines service tests bench
	$(PY) -m mypy

bench: install
	$(PY) bench/train.py
	$(PY) bench/transform.py

# fastai in an environment of its own, for `python bench/train.py --versus-fastai` (fastai is no
# dependency of embedkit). The same CPU build of torch goes in first.
FASTAI_VENV ?= .venv-fastai
FASTAI_SPEC ?= fastai==2.8.12
fastai-env:
	@test -x $(FASTAI_VENV)/bin/python || $(PYTHON) -m venv $(FASTAI_VENV)
	$(FASTAI_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(FASTAI_VENV)/bin/python -m pip install -q "$(FASTAI_SPEC)" pyarrow "$(TORCH_SPEC)"

clean:
	rm -rf $(VENV) $(FASTAI_VENV) mlflow.db mlruns mlartifacts runs .pytest_cache
