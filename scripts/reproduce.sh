#!/usr/bin/env bash
# The main job: set up, render the embedded SoundFont data and build its features.
# Profile: $PITCHTIMBRE_PROFILE, else `gpu` when CUDA is available, else `cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PITCHTIMBRE_CACHE="${PITCHTIMBRE_CACHE:-$PWD/.cache}"
.venv/bin/python -m pitchtimbre data "$@"
