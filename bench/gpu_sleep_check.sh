#!/usr/bin/env bash
# A short check of vLLM variants interleaved through sleep mode on a GPU box (issue 18 item
# 3), through `roilab pilot --spec`: the Llama-3.1-8B shape (random weights, eager, so no
# compile time), bf16 and FP8, 2 passes of at least 2 s each. DATA_DIR holds a store with the
# sample log ingested and models/random-llama-3.1-8b prepared (config + tokenizer).
#   bench/gpu_sleep_check.sh PARTS_DIR SHA256 DATA_DIR SPEC OUT
set -uo pipefail
parts=$1; sha=$2; data=$3; spec=$4; out=$5
here=$(cd "$(dirname "$0")/.." && pwd)
cat "$parts"/part.* > /tmp/b.tar && echo "$sha  /tmp/b.tar" | sha256sum -c - >/dev/null \
  && tar xf /tmp/b.tar -C /tmp && rm /tmp/b.tar || { echo "bundle broken"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  /tmp/bundle/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$here HF_HUB_OFFLINE=1 ROILAB_DATA_DIR=$data PYTHONUNBUFFERED=1
cd "$here"
start=$(date +%s)
timeout 420 python3 -m engine.cli.main pilot --workload 1 --spec "$spec" > "$out/pilot.log" 2>&1
echo "pilot rc $? in $(( $(date +%s) - start )) s"
python3 -m engine.cli.main show 1 > "$out/show.txt" 2>&1
cp "$data"/logs/*.log "$out/" 2>/dev/null
tail -c 3000 "$out/pilot.log"; cat "$out/show.txt"
