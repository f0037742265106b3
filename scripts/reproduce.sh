#!/usr/bin/env bash
# The main job: set up, reproduce the poster's experiment on the embedded SoundFont data,
# and build the book from the same cached models.
# Profile: $PITCHTIMBRE_PROFILE, else `gpu` when CUDA is available, else `cpu`.
# Results land in results/ (results.json, results.md, figures/) and the book in _build/html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PITCHTIMBRE_CACHE="${PITCHTIMBRE_CACHE:-$PWD/.cache}"
export PITCHTIMBRE_SOLUTIONS="${PITCHTIMBRE_SOLUTIONS:-1}"
.venv/bin/python -m pitchtimbre reproduce --out results "$@"
bash scripts/build_book.sh
echo "results: results/results.md; book: _build/html/index.html"
