#!/usr/bin/env bash
# The GPU checks and figures of issue 12, as one script for a machine with
# CUDA (the device tool's `run`). Not yet run on a GPU (none lent so far), so
# its duration there is unknown: the parts were sized for a few minutes
# each. Writes everything under OUT (default: $OUT, else ./gpu-results).
#
#   bash benchmarks/gpu_check.sh [OUT] [PART ...]
#
# PART: tests, labels, ops, bench, sustained, stages (default: all, in that
# order). Where one command may run at most 10 minutes, run it in two:
#   bash benchmarks/gpu_check.sh OUT tests labels ops
#   bash benchmarks/gpu_check.sh OUT bench sustained stages
#
# 1. the -m gpu tests (models on CUDA agree with the CPU; the device path's
#    labels; the controller analysing on CUDA);
# 2. the device post-processing against the host's, timed on CUDA;
# 3. `python -m smartscope bench --device cuda --scaling --positions`: analysis by frame
#    size (256² to 2048², stage by stage, peak GPU memory) and with 1, 4 and
#    16 positions in the loop;
# 4. 500 frames at 512² and 2048² through the analysis (sustained rate);
# 5. kernels, syncs and ms per frame of the device path, the watershed
#    compiled (the default on CUDA) and eager (benchmarks/device_ops.py);
# 6. the pipeline at 2048², one analysis stage against two
#    (benchmarks/stages_2048.py: whether the two stages' overlap of host
#    and device work pays on a GPU, where `stages: auto` keeps one).
set -euo pipefail
# run from the repository root; without an installed smartscope, use src/
python -c "import smartscope" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out="${1:-${OUT:-gpu-results}}"
shift || true
parts="${*:-tests labels ops bench sustained stages}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/torch.txt"
run_part() {
  case "$1" in
  tests)
    python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/pytest-gpu.txt" | tail -3 ;;
  labels)
    python benchmarks/device_labels.py --device cuda --json "$out/device-labels-cuda.json" | tail -1 ;;
  ops)
    for c in on off; do  # the first frame of each size compiles (not timed)
      python benchmarks/device_ops.py --device cuda --time --repeats 30 --compile $c \
        --json "$out/device-ops-cuda-compile-$c.json" 2>&1 | tee -a "$out/device-ops-cuda.txt" | grep "²"
    done ;;
  bench)
    python -m smartscope bench --device cuda --scaling --positions --json "$out/bench-cuda.json" > "$out/bench-cuda.txt" 2>&1 || tail -20 "$out/bench-cuda.txt" ;;
  sustained)
    python - "$out" <<'PY'
import json, sys
from smartscope.bench_scaling import measure_scaling
r = measure_scaling(frames=500, sizes=(512, 2048), device="cuda")
open(f"{sys.argv[1]}/scaling-500-cuda.json", "w").write(json.dumps(r, indent=2))
for size, e in r["sizes"].items():
    print(size, e["frames_per_s"], "frames/s", e["ms"], e["stages_ms"], e.get("peak_gpu_mb"))
PY
    ;;
  stages)
    python benchmarks/stages_2048.py --device cuda --frames 200 --repeats 2 \
      --json "$out/stages-2048-cuda.json" ;;
  *)
    echo "unknown part: $1 (tests, labels, ops, bench, sustained, stages)" >&2
    return 2 ;;
  esac
}
failed=""
for part in $parts; do  # a part that fails is reported; the others still run
  echo "== $part ($(date -u +%H:%M:%S))"
  run_part "$part" || failed="$failed $part"
done
if [ -n "$failed" ]; then
  echo "failed:$failed" >&2
  exit 1
fi
