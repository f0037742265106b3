#!/usr/bin/env bash
# The GPU figures and checks in one run (about 15 minutes on one datacenter GPU by our
# estimate: its parts have only run apart so far), each step timed and everything written to
# OUT/gpu_run.log as well:
#   1. the CUDA-only training paths checked on the GPU (benchmarks/gpu_checks.py);
#   2. DistributedDataParallel with NCCL under torchrun, one process per GPU (`ci` profile);
#      it needs two GPUs or more (NCCL runs one process per GPU) and is skipped, saying so,
#      on fewer;
#   3. the `gpu` profile's reproduce, both models and every seed, from an emptied cache of
#      its own (target: at most 5 minutes on one recent datacenter GPU); its progress bars
#      print a line every $TQDM_MININTERVAL seconds (30 unless set), each stage's time;
#   4. the same reproduce with its six models trained six at a time (`--parallel 6`), from
#      the notes and features step 3 left (run after it), to see whether one model at a
#      time leaves the GPU idle;
#   5. the training benchmark at the `gpu` profile's size (with a row for torch.compile,
#      whose step may be shorter where a small model's step is mostly kernel launches), the
#      feature benchmark, a step of three gpu-profile models stacked and vmapped against a
#      step of each (bench_lockstep.py: whether training in lock-step would pay), and six
#      gpu-profile models trained side by side against one after another.
# A failing step is reported and the next one still runs; the exit status is the number of
# failed steps. PART runs one group where a time limit per command calls for several calls
# (same OUT: the log grows): checks (1, 2), reproduce (3), parallel (4) or benchmarks (5).
#
#   bash benchmarks/gpu_run.sh [OUT [PART]]   # OUT: gpu-run/, PART: all; PYTHON picks python
set -uo pipefail
OUT=$(realpath -m "${1:-gpu-run}") # resolved before the cd below
PART=${2:-all}
PY=${PYTHON:-python3}
case "$PART" in all | checks | reproduce | parallel | benchmarks) ;; *)
    echo "gpu_run.sh: PART must be all, checks, reproduce, parallel or benchmarks, not '$PART'" >&2
    exit 64
    ;;
esac
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PITCHTIMBRE_CACHE="$OUT/cache"
export PYTHONUNBUFFERED=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30} # progress bars: a line every 30 s in the log
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # this checkout's package, installed or not
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
tee_pid=$!

failed=0
step() {
    local group=$1 name=$2 start=$SECONDS
    shift 2
    [[ $PART == all || $PART == "$group" ]] || return 0
    printf '\n== %s (%s)\n' "$name" "$(date +%T)"
    if "$@"; then
        printf '== %s: done in %d s\n' "$name" $((SECONDS - start))
    else
        printf '== %s: FAILED (exit %d) after %d s\n' "$name" $? $((SECONDS - start))
        failed=$((failed + 1))
    fi
}

ddp_nccl() {
    local gpus
    gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())') || return
    if ((gpus < 2)); then
        echo "SKIPPED: $gpus GPU(s); DDP with NCCL needs two or more (one process per GPU)"
        return 0
    fi
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$gpus" \
        -m pitchtimbre reproduce --profile ci --out "$OUT/results-ci-ddp" --quiet
}

reproduce_gpu() {
    rm -rf "$OUT/cache-gpu" # renders, featurises and trains everything inside the timing
    PITCHTIMBRE_CACHE="$OUT/cache-gpu" "$PY" -m pitchtimbre reproduce --profile gpu \
        --out "$OUT/results-gpu"
}

reproduce_gpu_side_by_side() {
    rm -rf "$OUT/cache-gpu/models" # the notes and features stay; every model trains again
    PITCHTIMBRE_CACHE="$OUT/cache-gpu" "$PY" -m pitchtimbre reproduce --profile gpu \
        --parallel 6 --out "$OUT/results-gpu-parallel"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$PY" -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)'
step checks "CUDA paths" "$PY" benchmarks/gpu_checks.py
step checks "torchrun + NCCL, ci profile" ddp_nccl
step reproduce "reproduce, gpu profile, empty cache (target <= 300 s)" reproduce_gpu
step parallel "reproduce, gpu profile, six models at a time, data cached" \
    reproduce_gpu_side_by_side
step benchmarks "training benchmark, gpu profile" "$PY" benchmarks/bench_training.py \
    --profile gpu --device cuda --compile
step benchmarks "feature benchmark" "$PY" benchmarks/bench_features.py
step benchmarks "three gpu-profile models in lock-step" "$PY" benchmarks/bench_lockstep.py \
    --profile gpu --models 3 --device cuda
step benchmarks "six gpu-profile models side by side" "$PY" benchmarks/bench_parallel.py \
    --profile gpu --models 6 --steps 1000 --device cuda
printf '\n%d step(s) failed; log in %s\n' "$failed" "$OUT/gpu_run.log"
exec >&- 2>&- # let tee see the end of its input and finish the log
wait "$tee_pid"
exit "$failed"
