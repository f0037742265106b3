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

setting() {  # setting KEY -> value(s) of [tool.pitchtimbre.setup] in pyproject.toml, one per line
  "$PY" - "$1" <<'PYEOF'
import sys, tomllib
value = tomllib.load(open("pyproject.toml", "rb"))["tool"]["pitchtimbre"]["setup"][sys.argv[1]]
print("\n".join(value) if isinstance(value, list) else value)
PYEOF
}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: '$PY' is not Python 3.11 or newer (pyproject.toml's requires-python); run again with PYTHON=python3.11 (or newer)" >&2
  exit 1
fi
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys, pip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  # a venv whose creation failed or was interrupted has no pip; one made by an older Python
  # cannot run the package
  echo "setup: $VENV has no pip or a Python older than 3.11: creating it again"
  rm -rf "$VENV"
fi
if [ ! -e "$VENV" ]; then
  echo "setup: creating $VENV"
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "setup: '$PY -m venv' failed (on Debian or Ubuntu: apt-get install python3-venv, then run this again)" >&2
    exit 1
  fi
fi
VPY="$VENV/bin/python"
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
  mapfile -t NODEPS < <(setting no-deps)
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
  mapfile -t DEB < <(setting debian)
  if command -v dpkg-query >/dev/null 2>&1; then
    MISSING=()
    for pkg in "${DEB[@]}"; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || MISSING+=("$pkg")
    done
    if [ ${#MISSING[@]} -gt 0 ]; then
      echo "setup: installing Debian packages: ${MISSING[*]}"
      SUDO=""
      [ "$(id -u)" = 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    fi
  else
    echo "setup: not Debian; the test suite also needs ${DEB[*]} (or your system's chromium, chromedriver and C++ compiler)"
  fi
fi
"$VPY" -c "import torch, pitchtimbre; print(f'setup: pitchtimbre {pitchtimbre.__version__}, torch {torch.__version__}')"
