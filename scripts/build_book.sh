#!/usr/bin/env bash
# Build the book, executing every chapter on the current profile ($PITCHTIMBRE_PROFILE, else
# gpu/cpu by hardware) with warnings as errors, into $PITCHTIMBRE_BOOK_OUT/_build/html
# (default: ./_build/html; the test suite builds its `ci` book under .cache/ci/book instead,
# so that it leaves the main job's book alone). jupyter-cache keys executed notebooks on their
# code cells alone, so outputs computed on another profile, solutions setting or version of
# the package are dropped first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${PITCHTIMBRE_BOOK_OUT:-.}
package=$(find pitchtimbre -name '*.py' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
want="profile=$(.venv/bin/python -c 'from pitchtimbre.config import resolve_profile; print(resolve_profile())') solutions=${PITCHTIMBRE_SOLUTIONS:-0} package=$package"
stamp="$out/_build/.executed-with"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$want" ]; then
  echo "build_book: last build was '$(cat "$stamp")', now '$want': dropping executed outputs"
  rm -rf "$out/_build"
fi
mkdir -p "$out/_build"
echo "$want" > "$stamp"
.venv/bin/jupyter-book build -W -n --keep-going --path-output "$out" .
