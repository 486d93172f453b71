#!/usr/bin/env bash
# Re-creates /work/venv-careamics (CPU torch 2.13.0 + CAREamics 0.3.5). See README.md.
set -euo pipefail
V=${VENV:-/work/venv-careamics}
python3.11 -m venv "$V"
. "$V/bin/activate"
pip install torch==2.13.0
echo "torch==2.13.0+cpu" > /tmp/careamics-constraints.txt
# careamics 0.3.5 pins torchvision<=0.26.0, which needs torch<=2.11: unsatisfiable with
# torch 2.13, so pip backtracks forever. Install its requirements by hand with the only
# torch-2.13-matching torchvision (0.28.0), then careamics itself with --no-deps.
pip install -c /tmp/careamics-constraints.txt torchvision==0.28.0 \
  "bioimageio-core<=0.11.0,>=0.9.0" "lightning!=2.6.2,!=2.6.3,<=2.6.6,>=2.2" \
  "matplotlib<=3.11.2" "microssim<=0.0.5" "numpy<=2.4.6,>=1.21" "pillow<=13.0.0" \
  "psutil<=7.2.2" "pydantic<=2.14.1,>=2.11" "pyyaml!=6.0.0,<=6.0.3" \
  "scikit-image<=0.26.0" "tifffile<=2026.3.3" "torchmetrics<1.9.0,>0.7.0" \
  "zarr<4.0.0,>=3.0.0" scipy
pip install --no-deps careamics==0.3.5
# PyPI's torchvision 0.28.0 is CUDA-linked; let it import on the +cpu torch.
python "$(dirname "$0")/patch_torchvision_cpu.py"
python -c "import careamics, torch; print('careamics', careamics.__version__, 'torch', torch.__version__)"
