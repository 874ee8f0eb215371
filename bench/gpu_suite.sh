#!/usr/bin/env bash
# Runs on the lent GPU machine (which reaches no registry): install the carried wheels, build the
# random Llama-3.1-8B checkpoint once, and run the named steps. Results are copied to $OUT.
#   bash bench/gpu_suite.sh smoke capture compare multi stream apppath compcheck routes classroom batch teacher patching kernels
# Carry .whl (../shared/tools/device-wheels.sh transformers==5.23.0) and .gpu-assets/tokenizer (the
# embedded tokenizer files, from the converted folder in ~/.cache/llm-explorer).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
CKPT=/tmp/llama31-8b-random
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
touch /tmp/suite-start
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ckpt() { [ -f $CKPT/config.json ] || python3 bench/make_random_checkpoint.py $CKPT; cp .gpu-assets/tokenizer/{tokenizer.json,tokenizer_config.json,chat_template.jinja} $CKPT/; }
# (only the tokenizer's own files: the folder also holds the embedded model's config.json)
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    smoke)   python3 bench/gpu_smoke.py .gpu-assets/tokenizer 2>&1 | tee $OUT/smoke.log | grep -v "it/s" ;;
    capture) ckpt; python3 bench/bench_capture.py --device cuda --checkpoint $CKPT --lengths 4096,32768,65536,131072 2>&1 | grep -v "it/s" | tee $OUT/capture.log ;;
    compare) ckpt; python3 bench/bench_compare.py --device cuda --checkpoint $CKPT 2>&1 | grep -v "it/s" ;;
    stream)  ckpt; python3 bench/gpu_stream_check.py $CKPT 2>&1 | grep -v "it/s" ;;
    apppath) ckpt; python3 bench/bench_app_path.py --device cuda --checkpoint $CKPT 2>&1 | grep -v "it/s" | tee $OUT/app_path.log ;;
    compcheck) python3 bench/gpu_components_check.py 2>&1 | tee $OUT/compcheck.log ;;
    routes)  ckpt; python3 bench/bench_routes.py --device cuda --checkpoint $CKPT --reps 5 --profile 2>&1 | grep -v "it/s" ;;
    classroom) ckpt; python3 bench/bench_classroom.py --device cuda --checkpoint $CKPT 2>&1 | grep -v "it/s" | tee $OUT/classroom.log ;;
    patching) ckpt; python3 bench/bench_patching.py --device cuda --checkpoint $CKPT 2>&1 | grep -v "it/s" ;;
    teacher) ckpt; python3 bench/bench_teacher_ablation.py --device cuda --checkpoint $CKPT 2>&1 | grep -v "it/s" | tee $OUT/teacher.log ;;
    batch)   ckpt; python3 bench/bench_capture_batch.py --device cuda --checkpoint $CKPT 2>&1 | grep -v "it/s" | tee $OUT/capture_batch.log ;;
    kernels) python3 bench/probe_summary_kernels.py --lengths 8192,32768 2>&1 | tee $OUT/kernels.log ;;
    multi)   python3 bench/bench_multi_gpu.py .gpu-assets/tokenizer 2>&1 | grep -v "it/s" ;;
  esac
done
find bench/results -name '*cuda*' -newer /tmp/suite-start -exec cp {} "$OUT"/ \; ; ls "$OUT"
