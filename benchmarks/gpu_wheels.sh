#!/usr/bin/env bash
# The wheels that smartscope needs on the device tool's GPU machine and that
# its image lacks (it has Python 3.12, torch with CUDA, numpy, scipy,
# scikit-image, tifffile, onnxruntime, tensorstore, typer, rich, pyyaml,
# matplotlib, pillow, pytest, pytest-xdist, hypothesis; nothing can be
# fetched there). Run here, where pip reaches the registry; the wheels land in
# .whl/ (ignored by git through .git/info/exclude), each pinned to the
# version installed in this environment, so the GPU runs what the tests here
# run. The device call then carries .whl and gpu_check.sh installs them:
#
#   bash benchmarks/gpu_wheels.sh            # once, here (about 10 MB)
#   run: bash benchmarks/gpu_check.sh "$OUT" tests labels ops   carry: [".whl"]
#
# The list was found by installing it, with nothing else, into a Python 3.12
# environment holding the image's packages, and running
# `bash benchmarks/gpu_check.sh OUT --rehearse` there (benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
mkdir -p "$dest"
# what smartscope imports, and what those import, that the image lacks
names=(
  pymmcore-plus pymmcore useq-schema psygnal
  pydantic pydantic-core annotated-types typing-inspection typing-extensions
  pydantic-extra-types shapely ome-types xsdata
  zarr numcodecs donfig google-crc32c ome-writers yaozarrs platformdirs
)
pins=$(python - "${names[@]}" <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))
PY
)
rm -f "$dest"/*.whl
# shellcheck disable=SC2086
python -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform manylinux_2_5_x86_64 \
  -d "$dest" $pins
n=$(ls "$dest"/*.whl | wc -l)
echo "$n wheels, $(du -sh "$dest" | cut -f1), in $dest/ (carry it: \".whl\")"
[ "$n" -eq "${#names[@]}" ] || { echo "expected ${#names[@]} wheels" >&2; exit 1; }
