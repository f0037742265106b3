#!/usr/bin/env bash
# The whole test suite, on the `ci` profile:
#   set-up (packages from pyproject.toml; Debian's chromium for the browser check), lint,
#   reproduce on `ci` (trains the models every chapter then loads from the cache),
#   build the book (-W -n: no warnings; into .cache/ci/book/_build/html), unit tests and
#   the browser check, every chapter executed by nbval, and the benchmarks at a small size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export PITCHTIMBRE_PROFILE=ci
export PITCHTIMBRE_SOLUTIONS=1
export PITCHTIMBRE_CACHE="$PWD/.cache/ci"
export PITCHTIMBRE_BOOK_OUT="$PITCHTIMBRE_CACHE/book"  # the main job's book stays in _build
VENV=.venv/bin
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "lint"
"$VENV/ruff" check .
"$VENV/ruff" format --check .
"$VENV/python" scripts/sync_book.py --check

step "reproduce (ci profile)"
"$VENV/python" -m pitchtimbre reproduce --out "$PITCHTIMBRE_CACHE/results-cli" --quiet

step "build the book"
bash scripts/build_book.sh

step "unit tests and the browser check"
"$VENV/python" -m pytest tests

step "every chapter through nbval"
"$VENV/python" -m pytest --nbval-lax -p no:cacheprovider book/*.ipynb

step "benchmarks (small)"
"$VENV/python" benchmarks/bench_data.py --small
"$VENV/python" benchmarks/bench_features.py --small
"$VENV/python" benchmarks/bench_training.py --small --compile
"$VENV/python" benchmarks/bench_parallel.py --small
"$VENV/python" benchmarks/bench_lockstep.py --small
