#!/usr/bin/env bash
# The whole test suite (scripts/test.sh) on the lowest versions pyproject.toml allows, so that
# its floors are checked rather than guessed. In a clone of this checkout's last commit (not
# its uncommitted changes), uv resolves the package with every extra by `--resolution
# lowest-direct`: each dependency pyproject.toml names at its floor, the others as the resolver
# finds them. The clone's set-up then installs under those pins (PIP_CONSTRAINT). torch is left
# to the set-up ([tool.pitchtimbre.setup] torch); its floor is checked by hand (README: Set-up).
# Needs PyPI, and the Debian packages test.sh installs.
#
#   scripts/lowest_versions.sh [DIR]   DIR (default: a new temporary directory) keeps the clone
#                                      (DIR/repo, with its .venv) and the pins (DIR/lowest.txt)
# PYTHON picks the interpreter (default python3; 3.11 or newer), as for setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DIR=${1:-$(mktemp -d -t pitchtimbre-lowest.XXXXXX)}
if [ -e "$DIR/repo" ]; then
  echo "lowest_versions: $DIR/repo exists: give a new or empty directory" >&2
  exit 2
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

git clone --quiet . "$DIR/repo"
echo "lowest_versions: testing $(git rev-parse --short HEAD) in $DIR/repo"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "lowest_versions: note: this checkout's uncommitted changes are not in the clone, so not tested"
fi
cd "$DIR/repo"  # its pyproject.toml from here on
if [ ! -x "$DIR/uv/bin/uv" ]; then
  "$PY" -m venv "$DIR/uv"
  "$DIR/uv/bin/python" -m pip install --quiet uv
fi

settings=$("$PY" - <<'PYEOF'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
extras = " ".join(f"--extra={name}" for name in project["project"]["optional-dependencies"])
print(f"{sys.version_info[0]}.{sys.version_info[1]}", project["tool"]["pitchtimbre"]["setup"]["torch"], extras)
PYEOF
)
read -r version torch extras <<<"$settings"
echo "$torch" > "$DIR/torch.txt"
# shellcheck disable=SC2086  # one --extra=NAME a word
"$DIR/uv/bin/uv" pip compile pyproject.toml $extras --resolution lowest-direct \
  --python-version "$version" --override "$DIR/torch.txt" --no-header --quiet \
  --output-file "$DIR/lowest.txt"
# The pins without torch and the CUDA libraries of PyPI's build: the set-up installs torch itself.
grep -v -i -E '^(torch|triton|nvidia-)' "$DIR/lowest.txt" > "$DIR/constraints.txt"
echo "lowest_versions: the floors pyproject.toml names, as resolved:"
"$PY" - "$DIR/lowest.txt" <<'PYEOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
named = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
names = {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in named}
pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open(sys.argv[1]).read(), flags=re.M)
names.discard("torch")  # the set-up's, not its floor
print("  " + ", ".join(f"{n} {v}" for n, v in pins if n.lower().replace("_", "-") in names))
PYEOF

PIP_CONSTRAINT="$DIR/constraints.txt" PYTHON="$PY" bash scripts/test.sh
echo "lowest_versions: scripts/test.sh passed on the floors above ($DIR/lowest.txt)"
