#!/usr/bin/env bash
# The main job: set up, reproduce the poster's experiment on the embedded SoundFont data,
# and build the book from the same cached models.
# Profile: --profile P, else $PITCHTIMBRE_PROFILE, else `gpu` when CUDA is available, else `cpu`;
# the book is built on the same one. Options: --profile P, --parallel N, --resume/--fresh,
# --quiet (as `python -m pitchtimbre reproduce`). --seeds, --steps and --source are refused:
# the book's chapters follow the profile alone, so they would show other models than the
# results; run `.venv/bin/python -m pitchtimbre reproduce --out DIR ...` for such a run (or
# for results in another folder than results/: --out is refused too).
# Results land in results/ (results.json, results.md, figures/) and the book in _build/html.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --profile=* | --profile)
      if [ "${args[i]}" = --profile ]; then profile="${args[i + 1]:-}"; else profile="${args[i]#--profile=}"; fi
      case "$profile" in
        ci | cpu | gpu) export PITCHTIMBRE_PROFILE="$profile" ;;
        *) echo "reproduce.sh: --profile must be ci, cpu or gpu, got '$profile'" >&2; exit 2 ;;
      esac
      ;;
    --seeds | --seeds=* | --steps | --steps=* | --source | --source=*)
      echo "reproduce.sh: ${args[i]%%=*} would give results the book does not show (its chapters follow the profile alone); run .venv/bin/python -m pitchtimbre reproduce --out DIR ${args[i]%%=*} ... for such a run" >&2
      exit 2
      ;;
    --out | --out=*)
      echo "reproduce.sh: the main job writes to results/; run .venv/bin/python -m pitchtimbre reproduce --out DIR for another folder" >&2
      exit 2
      ;;
    --parallel) i=$((i + 1)) ;; # its value, whatever it is, is the command line's to check
    --parallel=* | --resume | --fresh | --quiet | -h | --help) ;;
    -*)
      echo "reproduce.sh: unknown option '${args[i]}'; it takes --profile P, --parallel N, --resume, --fresh and --quiet (whole names)" >&2
      exit 2
      ;;
  esac
done
case "${PITCHTIMBRE_PROFILE:-}" in
  "" | ci | cpu | gpu) ;;
  *) echo "reproduce.sh: PITCHTIMBRE_PROFILE must be ci, cpu or gpu, got '$PITCHTIMBRE_PROFILE'" >&2; exit 2 ;;
esac
bash scripts/setup.sh
export PITCHTIMBRE_CACHE="${PITCHTIMBRE_CACHE:-$PWD/.cache}"
export PITCHTIMBRE_SOLUTIONS="${PITCHTIMBRE_SOLUTIONS:-1}"
.venv/bin/python -m pitchtimbre reproduce --out results "$@"
bash scripts/build_book.sh
echo "results: results/results.md; book: _build/html/index.html"
