#!/usr/bin/env bash
# Issue 18's GPU runs, through `roilab` as a user types it, on an offline GPU box
# (torch 2.11 + CUDA 13). One step per call so each fits a short lease:
#
#   bench/gpu_pilot_repeat.sh install PARTS_DIR SHA256   # bundle -> /tmp/site (15 s)
#   bench/gpu_pilot_repeat.sh setup                       # embedded model + the sample log
#   bench/gpu_pilot_repeat.sh pilot K OUT                 # README's GPU pilot line, run K
#   bench/gpu_pilot_repeat.sh spec K OUT                  # export W4A16 + bf16/FP8/W4A16 pilot
#
# The pilot line is README's with no --hardware (the GPU is detected and priced as itself)
# and the default measurement settings. Writes OUT/pilot-K.log, OUT/show-K.txt and
# OUT/passes-K.csv (every stored pass) for run K.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=/tmp/site:$here PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/bundle HF_HUB_OFFLINE=1
export ROILAB_DATA_DIR=${ROILAB_DATA_DIR:-/tmp/r18/data} PYTHONUNBUFFERED=1
roilab() { (cd "$here" && python3 -c 'import sys; from engine.cli.main import main; sys.exit(main(sys.argv[1:]))' "$@"); }
passes() {  # every stored pass of run $1, as CSV
  python3 - "$1" <<'PY'
import sys
from engine.cli.common import open_store
from engine.core.settings import get_settings
frame = open_store(get_settings()).passes_frame(int(sys.argv[1]))
print(frame.drop(columns=["variant_id"]).to_csv(index=False, float_format="%.4g"), end="")
PY
}
case $1 in
  install) bash "$here/bench/gpu_box_install.sh" "$2" "$3" /tmp/site ;;
  setup)
    roilab prepare-model
    roilab ingest "$here/data/samples/support_chat.jsonl" --name "support chat"
    nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv ;;
  pilot)
    k=$2; out=$3; mkdir -p "$out"
    start=$(date +%s)
    roilab pilot --workload 1 --backend vllm --model random:llama-3.1-8b --variants "${VARIANTS:-fp8,fp8-kv}" \
      --max-requests 32 --max-new-tokens 128 --batch-size 32 ${HW:+--hardware $HW} \
      > "$out/pilot-$k.log" 2>&1 \
      || echo "pilot $k exited $?"
    echo "pilot $k: $(( $(date +%s) - start )) s wall"
    run=$(grep -o 'Run [0-9]*' "$out/pilot-$k.log" | head -1 | cut -d' ' -f2)
    run=${run:-$k}
    roilab show "$run" > "$out/show-$k.txt" 2>&1 || true
    passes "$run" > "$out/passes-$k.csv" || true
    tail -5 "$out/pilot-$k.log"; cat "$out/show-$k.txt"; cat "$out/passes-$k.csv" ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
