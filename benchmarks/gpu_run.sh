#!/usr/bin/env bash
# The GPU figures and checks, in parts, each step timed and everything written to
# OUT/gpu_run.log as well. In the order they run:
#   reproduce   the `gpu` profile's reproduce, both models and every seed, from an emptied cache
#               (target: at most 5 minutes on one recent datacenter GPU; last measured about
#               430 s); its progress bars print a line every $TQDM_MININTERVAL seconds (30
#               unless set);
#   benchmarks  the training benchmark at the `gpu` profile's size (our loop against a
#               Dataset/DataLoader loop and against the model alone: the pipeline ratio,
#               target >= 0.9; a row for torch.compile; memory at 1,000, 20,000 and 100,000
#               notes) and the feature benchmark (128 notes);
#   checks      the CUDA-only training paths (benchmarks/gpu_checks.py), and DDP with NCCL under
#               torchrun (`ci` profile), which needs two GPUs or more and is skipped, saying so,
#               on fewer;
#   parallel    the same reproduce with its six models trained six at a time (`--parallel 6`),
#               on the notes and features `reproduce` left in the cache (or, on a fresh
#               machine, builds them first: its results give each stage's time), to see
#               whether one model at a time leaves the GPU idle;
#   extras      a step of three gpu-profile models stacked and vmapped against a step of each
#               (bench_lockstep.py), and six gpu-profile models side by side against one after
#               another (bench_parallel.py).
# PARTS is one part, several joined by commas, or `all`. Each of reproduce and parallel takes
# most of a 10-minute command: give each a call of its own.
# A failing step is reported and the next one still runs; the exit status is the number of
# failed steps. Before any step, a preflight check stops the run (exit 2) where CUDA or a
# package is missing: the device image lacks librosa and the audio packages, which travel as
# wheels (make them here with `bash benchmarks/gpu_wheels.sh` and carry `.whl`; this script
# installs them). Caches and full results stay in .cache/gpu-run (git-ignored, so a warm
# machine keeps them between calls); OUT gets the log and flat copies of results.md/json.
# GPU_RUN_CACHE and GPU_RUN_WHEELS move the cache and the wheels' folder.
# A 15-minute device session (machine start-up included): `reproduce` in one call, then at once
# (the machine stays warm for 30 s) `benchmarks`; `checks` and `parallel` in a later session.
# The preflight imports the renderers too: a missing tinysoundfont would fall back to the
# slower midirenderer and spoil the reproduce's timing.
#
#   bash benchmarks/gpu_run.sh PARTS [OUT]   # OUT: $OUT, else gpu-run/; PYTHON picks python
set -uo pipefail
PARTS=(reproduce benchmarks checks parallel extras)
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: gpu_run.sh PARTS [OUT]   (PARTS: all, or some of ${PARTS[*]} joined by commas)" >&2
    exit 64
fi
PART=$1
OUT=$(realpath -m "${2:-${OUT:-gpu-run}}") # resolved before the cd below
PY=${PYTHON:-python3}
IFS=, read -ra ASKED <<<"$PART"
if [ ${#ASKED[@]} -eq 0 ]; then
    echo "gpu_run.sh: PARTS names no part; use all or some of ${PARTS[*]}" >&2
    exit 64
fi
for part in "${ASKED[@]}"; do # a whole word of the list (an empty or spaced part is none)
    if [[ $part == *" "* || " all ${PARTS[*]} " != *" $part "* ]]; then
        echo "gpu_run.sh: PARTS must be all or some of ${PARTS[*]} joined by commas, not '$part'" >&2
        exit 64
    fi
done
cd "$(dirname "$0")/.."
CACHE=$(realpath -m "${GPU_RUN_CACHE:-.cache/gpu-run}")
mkdir -p "$OUT" "$CACHE"
export PITCHTIMBRE_CACHE="$CACHE/shared"
export PYTHONUNBUFFERED=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30} # progress bars: a line every 30 s in the log
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # this checkout's package, installed or not
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
tee_pid=$!

finish() {
    exec >&- 2>&- # let tee see the end of its input and finish the log
    wait "$tee_pid"
    exit "$1"
}

wanted() { [[ " ${ASKED[*]} " == *" all "* || " ${ASKED[*]} " == *" $1 "* ]]; }

failed=0
step() {
    local group=$1 name=$2 start=$SECONDS
    shift 2
    wanted "$group" || return 0
    printf '\n== %s (%s)\n' "$name" "$(date +%T)"
    if "$@"; then
        printf '== %s: done in %d s\n' "$name" $((SECONDS - start))
    else
        printf '== %s: FAILED (exit %d) after %d s\n' "$name" $? $((SECONDS - start))
        failed=$((failed + 1))
    fi
}

keep_results() { # the results' table and numbers, flat in OUT: its figures stay in CACHE
    local from=$1 name=$2
    cp "$from/results.md" "$OUT/$name.md" && cp "$from/results.json" "$OUT/$name.json"
}

ddp_nccl() {
    local gpus
    gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())') || return
    if ((gpus < 2)); then
        echo "SKIPPED: $gpus GPU(s); DDP with NCCL needs two or more (one process per GPU)"
        return 0
    fi
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$gpus" \
        -m pitchtimbre reproduce --profile ci --out "$CACHE/results-ci-ddp" --quiet &&
        keep_results "$CACHE/results-ci-ddp" results-ci-ddp
}

gpu_reproduce_into() { # NAME [OPTIONS]: the gpu profile's reproduce into CACHE/NAME, kept
    local name=$1
    shift
    rm -rf "${CACHE:?}/$name"
    PITCHTIMBRE_CACHE="$CACHE/gpu" "$PY" -m pitchtimbre reproduce --profile gpu "$@" \
        --out "$CACHE/$name" && keep_results "$CACHE/$name" "$name"
}

reproduce_gpu() {
    rm -rf "$CACHE/gpu" # renders, featurises and trains inside the timing
    gpu_reproduce_into results-gpu
}

reproduce_gpu_side_by_side() {
    if [ -z "$(ls -A "$CACHE/gpu/features" 2>/dev/null)" ]; then # a fresh machine
        echo "no features in $CACHE/gpu: building the data first (reproduce's data stage)"
        PITCHTIMBRE_CACHE="$CACHE/gpu" "$PY" -m pitchtimbre data --profile gpu || return
    fi
    rm -rf "$CACHE/gpu/models" # every model trains again
    gpu_reproduce_into results-gpu-parallel --parallel 6
}

WHEELS=${GPU_RUN_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing the carried wheels: $(ls "$WHEELS" | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$CACHE/site" "$WHEELS"/*.whl || finish 2
    export PYTHONPATH="$PYTHONPATH:$CACHE/site" # packages the image lacks, none it has
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$PY" -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)'
if ! "$PY" -c '# preflight: import what the parts import, and find a GPU
import sys
try:
    import librosa.feature, midirenderer, pretty_midi, soundfile, tinysoundfont, umap, torch
    import pitchtimbre.data, pitchtimbre.experiment
except ImportError as exc:
    sys.exit(f"preflight: {exc}: run `bash benchmarks/gpu_wheels.sh` where pip works and carry .whl")
if not torch.cuda.is_available():
    sys.exit("preflight: torch sees no CUDA device")
'; then
    echo "gpu_run.sh: stopped before any step"
    finish 2
fi
step reproduce "reproduce, gpu profile, empty cache (target <= 300 s)" reproduce_gpu
step benchmarks "training benchmark, gpu profile" "$PY" benchmarks/bench_training.py \
    --profile gpu --device cuda --compile --notes 1000,20000,100000
step benchmarks "feature benchmark, 128 notes" "$PY" benchmarks/bench_features.py \
    --notes 128 --repeat 2
step checks "CUDA paths" "$PY" benchmarks/gpu_checks.py
step checks "torchrun + NCCL, ci profile" ddp_nccl
step parallel "reproduce, gpu profile, six models at a time, data cached" \
    reproduce_gpu_side_by_side
step extras "three gpu-profile models in lock-step" "$PY" benchmarks/bench_lockstep.py \
    --profile gpu --models 3 --device cuda
step extras "six gpu-profile models side by side" "$PY" benchmarks/bench_parallel.py \
    --profile gpu --models 6 --steps 1000 --device cuda
printf '\n%d step(s) failed; log in %s\n' "$failed" "$OUT/gpu_run.log"
finish "$failed"
