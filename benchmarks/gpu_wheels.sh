#!/usr/bin/env bash
# Here, where pip reaches PyPI, before a GPU session: downloads into .whl/ (git-ignored) the
# wheels of the packages the device image lacks (librosa and the audio packages, the
# SoundFont renderers, UMAP; its image has torch, numpy, scipy, numba, scikit-learn,
# matplotlib, seaborn and tqdm), at the versions of this checkout's .venv, for the device's
# Python 3.12 on x86-64 Linux. Carry `.whl` with the run; benchmarks/gpu_run.sh installs them.
#
#   bash benchmarks/gpu_wheels.sh        # 16 wheels, about 9 MB
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(librosa audioread soxr pooch platformdirs decorator soundfile cffi pycparser
    pretty_midi mido importlib_resources midirenderer tinysoundfont umap-learn pynndescent)
specs=$(.venv/bin/python - "${PACKAGES[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"gpu_wheels: {name} is not in .venv: run `bash scripts/setup.sh` first")
PYEOF
)
mapfile -t SPECS <<<"$specs"
rm -rf .whl
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${SPECS[@]}"
echo "gpu_wheels: $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1), in .whl/: carry it (run's carry: [\".whl\"])"
