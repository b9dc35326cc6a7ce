#!/usr/bin/env bash
# Run every speed benchmark in turn, each under its own time limit, writing its JSON and log
# into one folder; a benchmark that fails or runs out of time does not stop the others.
# This is how the GPU tables of docs/benchmarks.md were made: the scripts are the same on
# every machine (they size the matmul peak and pick torch's device from what JAX sees).
#
#   bash benchmarks/run_all.sh OUT_DIR [SCALE]   # SCALE multiplies every time limit (default 1)
set -u
out=$(realpath -m "${1:?usage: run_all.sh OUT_DIR [SCALE]}")
scale=${2:-1}
mkdir -p "$out"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1
python=$(command -v python || command -v python3)
run() {  # TAG LIMIT_S SCRIPT ARGS...: SCRIPT.py ARGS --out OUT/TAG.json, its log in OUT/TAG.log
  local tag=$1 limit=$(( $2 * scale )) script=$3
  shift 3
  echo "=== $tag (limit ${limit} s, $(date +%T))"
  timeout "$limit" "$python" "$script.py" "$@" --out "$out/$tag.json" >"$out/$tag.log" 2>&1
  echo "exit $? ($(date +%T))"
  grep -v "^wrote " "$out/$tag.log" | tail -n 30
}
# Limits sized from the H200 runs (training 91 s, sampling 49 s, peers 25 s, pretrained_ddim
# 40 s, training_b65536 77 s, memory 111 s; trace_layout did not finish six gradients in 60 s;
# session 12: image_sampling 48 s, image_training 75 s).
run training 120 training
run trace_layout 120 trace_layout --repeats 3
run exact_score 120 exact_score
run peers 90 peers
run sampling 120 sampling
run pretrained_ddim 180 pretrained_ddim
run training_b65536 90 training --batch-size 65536 --repeats 3
run memory 120 memory
run image_sampling 600 image_sampling
run image_training 420 image_training
run unet_parts 300 unet_parts
run loop_convolutions 300 loop_convolutions --network
