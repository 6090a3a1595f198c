# roilab: `make demo` sets everything up and runs the default pilot; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup system-deps demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # CPU build; on a GPU box install your CUDA torch first
	DISABLE_CUDA=1 $(PY) -m pip install -q -e '.[dev]'  # hqq: skip its CUDA kernel build
	touch $@

setup: $(VENV)/.installed
	$(PY) -m engine.cli prepare-model

# Chromium for the browser test, poppler for PDF checks (Debian packages).
system-deps:
	@command -v chromium >/dev/null && command -v pdftotext >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver poppler-utils; }

demo: setup
	$(PY) -m engine.cli demo --port $(PORT)

test: setup system-deps
	$(PY) -m pytest -q -ra

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

clean:
	rm -rf $(VENV) data/models data/cache data/roilab.db*
