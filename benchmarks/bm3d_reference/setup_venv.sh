#!/usr/bin/env bash
# Creates the BM3D reference environment (VENV=/work/venv-bm3d by default). See README.md.
set -euo pipefail
V=${VENV:-/work/venv-bm3d}
python3 -m venv "$V"
. "$V/bin/activate"
pip install "bm3d==4.0.3" tifffile
python -c "import bm3d; print('bm3d ok')"
