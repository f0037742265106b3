#!/usr/bin/env bash
# The whole test suite on the `ci` profile: set-up, lint, unit tests, a small benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PITCHTIMBRE_PROFILE=ci
export PITCHTIMBRE_CACHE="$PWD/.cache/ci"
VENV=.venv/bin
"$VENV/ruff" check .
"$VENV/ruff" format --check .
"$VENV/python" -m pytest tests
"$VENV/python" benchmarks/bench_data.py --small
