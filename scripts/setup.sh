#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs the project into it, from
# the project's own files only: pyproject.toml (package, extras, and the [tool.pitchtimbre.setup]
# table for what pip metadata cannot say). Safe to run again: it skips what is up to date.
#
#   scripts/setup.sh              package + book + test extras
#   scripts/setup.sh --browser    also the Debian packages the test suite needs: chromium and
#                                 chromium-driver (browser check), g++ (torch.compile's CPU code)
# PYTHON picks the interpreter (default python3; 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --browser) WITH_BROWSER=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

VPY="$VENV/bin/python"
setting() {  # setting KEY -> value(s) of [tool.pitchtimbre.setup] in pyproject.toml, one per line
  "$VPY" - "$1" <<'PYEOF'
import sys, tomllib
value = tomllib.load(open("pyproject.toml", "rb"))["tool"]["pitchtimbre"]["setup"][sys.argv[1]]
if isinstance(value, dict):
    value = [f"{k} {v}" for k, v in value.items()]
print("\n".join(value) if isinstance(value, list) else value)
PYEOF
}

runs_311() {  # runs_311 PYTHON: whether that interpreter runs, as Python 3.11 or newer
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

if [ -e "$VENV" ] || [ -L "$VENV" ]; then
  if ! runs_311 "$VPY"; then
    # a venv whose creation broke off, a dangling link, or one made by an older Python
    echo "setup: $VENV does not run Python 3.11 or newer: creating it again"
    rm -rf "$VENV"
  elif ! "$VPY" -m pip --version >/dev/null 2>&1 && ! "$VPY" -m ensurepip --upgrade >/dev/null 2>&1; then
    # a working venv without pip (uv makes them so) holds the user's packages: not ours to delete
    echo "setup: $VENV has no pip and ensurepip cannot add it: add pip to it (uv pip install --python $VPY pip) or remove $VENV, then run this again" >&2
    exit 1
  fi
fi
if [ ! -e "$VENV" ]; then
  if ! runs_311 "$PY"; then
    echo "setup: '$PY' is not Python 3.11 or newer (pyproject.toml's requires-python); run again with PYTHON=python3.11 (or newer)" >&2
    exit 1
  fi
  echo "setup: creating $VENV"
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "setup: '$PY -m venv' failed (on Debian or Ubuntu: apt-get install python3-venv, then run this again)" >&2
    exit 1
  fi
fi
STAMP="$VENV/.pitchtimbre-setup"
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  "$VPY" -m pip install --quiet --upgrade pip
  if ! "$VPY" -c "import torch" 2>/dev/null; then
    TORCH=$(setting torch)
    echo "setup: no torch importable, installing $TORCH"
    "$VPY" -m pip install --quiet "$TORCH"
  fi
  echo "setup: installing pitchtimbre[book,test] (editable)"
  "$VPY" -m pip install --quiet -e ".[book,test]"
  nodeps=$(setting no-deps)  # a failure here stops the set-up (set -e), unlike in a < <(...)
  NODEPS=()
  [ -z "$nodeps" ] || mapfile -t NODEPS <<<"$nodeps"
  if [ ${#NODEPS[@]} -gt 0 ]; then
    echo "setup: installing without dependencies: ${NODEPS[*]}"
    "$VPY" -m pip install --quiet --no-deps "${NODEPS[@]}"
  fi
  "$VPY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pitchtimbre)" >/dev/null
  echo "$WANT" > "$STAMP"
else
  echo "setup: $VENV is up to date"
fi

if [ "$WITH_BROWSER" = 1 ]; then
  MISSING=()
  debian=$(setting debian)
  while read -r pkg cmd; do  # a package is missing when the command it provides is
    [ -n "$pkg" ] || continue  # an empty table
    if [ -z "$cmd" ]; then
      echo "setup: pyproject.toml's debian table must map each package to its command, got '$pkg'" >&2
      exit 1
    fi
    command -v "$cmd" >/dev/null 2>&1 || MISSING+=("$pkg")
  done <<<"$debian"
  if [ ${#MISSING[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${MISSING[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null; }; then
      echo "setup: could not install ${MISSING[*]} (not Debian, or no root): install them, or your system's equivalents, yourself; the browser check and the compile benchmark need them" >&2
    fi
  fi
fi
"$VPY" -c "import torch, pitchtimbre; print(f'setup: pitchtimbre {pitchtimbre.__version__}, torch {torch.__version__}')"
