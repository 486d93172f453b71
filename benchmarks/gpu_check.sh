#!/usr/bin/env bash
# The GPU checks and figures of issue 12, as one script for a machine with
# CUDA (the device tool's `run`). Not yet run on a GPU (none lent so far), so
# its duration there is unknown: the parts were sized for a few minutes
# each, and each part's time is printed.
#
#   bash benchmarks/gpu_check.sh OUT [PART ...] [--rehearse]
#
# PART: tests, paced, profile, graphs, labels, ops, bench, sustained, stages,
# store (default: all, in that order). Where one command may run at most 10
# minutes, run it in two:
#   bash benchmarks/gpu_check.sh OUT tests paced profile labels ops
#   bash benchmarks/gpu_check.sh OUT graphs bench sustained stages store
#
# On the device tool's machine (Python 3.12 with torch and CUDA, but not
# smartscope's other dependencies, and nothing can be fetched there): run
# `bash benchmarks/gpu_wheels.sh` here first, then call `run` with
# carry [".whl"] and the command `bash benchmarks/gpu_check.sh "$OUT" PART ...`.
# The wheels in .whl/ are installed under /tmp/site, and src/ is put on
# PYTHONPATH where smartscope is not installed. At most 8 files come back
# from $OUT, so the results are kept in a scratch folder and packed into
# OUT/gpu-check.tar.gz after every part (what finished survives a timeout),
# beside OUT/gpu-check.log (this script's output).
#
# --rehearse: the same parts on the CPU at small sizes, to check the script
# and everything it calls here before a GPU session spends device time on it
# (the -m gpu tests are then collected and skipped).
#
# 1. the -m gpu tests (models on CUDA agree with the CPU; the device path's
#    labels; the controller analysing on CUDA);
# 2. the targets: frames fed to the analysis at a camera's pace
#    (benchmarks/paced_analysis.py): 2048² and 512² at 100 frames/s, 1000
#    frames each: frames skipped, frame→result p50/p95/p99/max; and 2048²
#    once more with every frame and result written to a run folder as a run
#    does (--store: the frame's write counted in frame→result, the labels
#    stored on the results thread);
# 2a. where a frame's time goes on the card (benchmarks/gpu_profile.py:
#    torch.profiler over 20 frames at 512² and 2048²: device time per frame
#    and its share of the wall time, launches, graph replays, copies and
#    host waits per frame, the top operators, the timelines);
# 2b. part 2 with the networks' CUDA graphs off (analysis.cuda_graphs:
#    false), against part 2 (on, the default): whether replaying pays;
# 2c. the device post-processing against the host's, timed on CUDA;
# 3. the sections of `smartscope bench --device cuda --scaling --positions`
#    that use the models (its simulator and controller sections run on the
#    CPU and are left out): analysis by frame size (256² to 2048², stage by
#    stage, peak GPU memory) and with 1, 4 and 16 positions in the loop;
# 4. 500 frames at 512² and 2048² through the analysis (sustained rate);
# 5. kernels, syncs and ms per frame of the device path, the watershed
#    compiled (the default on CUDA) and eager (benchmarks/device_ops.py);
# 6. the pipeline at 2048², one analysis stage against two
#    (benchmarks/stages_2048.py: whether the two stages' overlap of host
#    and device work pays on a GPU, where `stages: auto` keeps one);
# 7. what storing an analysed frame costs on that machine's CPU and disk
#    (benchmarks/result_store.py: 512² and 2048², rows and labels, and with
#    the denoised plane): whether the results thread keeps up at 100/s.
set -euo pipefail
cd "$(dirname "$0")/.."
rehearse=0
args=()
for a in "$@"; do
  if [ "$a" = "--rehearse" ]; then rehearse=1; else args+=("$a"); fi
done
out="${args[0]:-${OUT:-gpu-results}}"
parts="${args[*]:1}"
parts="${parts:-tests paced profile graphs labels ops bench sustained stages store}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec > >(tee -a "$out/gpu-check.log") 2>&1
PY="${PYTHON:-python3}"  # the device machine's python3 holds torch
# the wheels of benchmarks/gpu_wheels.sh, where smartscope's dependencies are missing
if ! "$PY" -c "import pymmcore_plus, useq, zarr, pydantic" 2>/dev/null \
  && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import smartscope" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# the results as they come; what is kept is OUT/gpu-check.tar.gz
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# written aside and moved into place: a timeout while packing keeps the last pack
pack() { tar -czf "$out/.gpu-check.tmp" -C "$work" . && mv -f "$out/.gpu-check.tmp" "$out/gpu-check.tar.gz"; }
if [ "$rehearse" = 1 ]; then
  dev=cpu
  ops_args=(--sizes 256 --repeats 2)
  host_args=(--sizes 256 --repeats 2)
  sustained_frames=5; sustained_sizes="256, 512"
  stages_args=(--frames 5 --repeats 1 --size 512)
  paced_runs=("256 5 10 none" "256 5 10 all store")
  profile_args=(--sizes 256 --frames 3)
  store_args=(--sizes 256 --frames 4)
else
  dev=cuda
  ops_args=(--repeats 30)
  host_args=(--repeats 30)
  sustained_frames=500; sustained_sizes="512, 2048"
  stages_args=(--frames 200 --repeats 2)
  # size, frames/s, frames, images the results keep (none: they stay on the
  # card), and "store": frames and results written to a run folder as a run does
  paced_runs=("2048 100 1000 all" "2048 100 1000 none" "512 100 1000 all"
    "2048 100 1000 labels store")
  profile_args=(--sizes 512 2048 --frames 20)
  store_args=(--sizes 512 2048 --frames 30)
fi
echo "gpu_check: parts: $parts; device $dev; results in $out/gpu-check.tar.gz"
nvidia-smi > "$work/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" | tee "$work/torch.txt"
run_part() {
  case "$1" in
  tests)
    "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$work/pytest-gpu.txt" | tail -3
    return "${PIPESTATUS[0]}" ;;
  paced | graphs)  # each run's failure counts (a part's status is not only its last command's)
    local rc=0 graphs=on
    [ "$1" = graphs ] && graphs=off
    for r in "${paced_runs[@]}"; do
      read -r size rate n keep store <<< "$r"
      # graphs off: the runs that keep both images only (device time is short)
      [ "$1" = graphs ] && [ "$keep" != all ] && [ "$rehearse" != 1 ] && continue
      [ "$1" = graphs ] && [ -n "$store" ] && continue
      "$PY" benchmarks/paced_analysis.py --device "$dev" --size "$size" --rate "$rate" \
        --frames "$n" --cuda-graphs "$graphs" --keep-images "$keep" ${store:+--store} \
        --json "$work/paced-$dev-graphs-$graphs.jsonl" \
        | "$PY" -c "import json, sys; r = json.loads(sys.stdin.read()); print(r['settings']['size_px'], r['settings']['rate_hz'], 'frames/s, graphs', sys.argv[1], r['cuda_graphs'], ':', r['analysed'], 'analysed', r['skipped'], 'skipped, frame->result ms', r['frame_to_result_ms'], r['stages_ms'], r['model_stages_ms'])" "$graphs" \
        || rc=1
    done
    return $rc ;;
  profile)
    "$PY" benchmarks/gpu_profile.py --device "$dev" "${profile_args[@]}" --out "$work" 2>&1 \
      | grep -v '^USDT' | tee "$work/profile-$dev.log" | tail -4
    return "${PIPESTATUS[0]}" ;;
  labels)
    "$PY" benchmarks/device_labels.py --device "$dev" --json "$work/device-labels-$dev.json" | tail -1
    return "${PIPESTATUS[0]}" ;;
  ops)
    local rc=0
    for c in on off; do  # the first frame of each size compiles (not timed)
      "$PY" benchmarks/device_ops.py --device "$dev" --time "${ops_args[@]}" --compile $c \
        --json "$work/device-ops-$dev-compile-$c.json" 2>&1 | tee -a "$work/device-ops-$dev.txt" | grep "²" \
        || rc=1
    done
    # the area filter and measurements on the host against on the device
    "$PY" benchmarks/host_tables.py --device "$dev" "${host_args[@]}" \
      --json "$work/host-tables-$dev.json" > "$work/host-tables-$dev.txt" 2>&1 \
      || { tail -5 "$work/host-tables-$dev.txt"; rc=1; }
    return $rc ;;
  bench)  # `smartscope bench --scaling --positions`, without its CPU-only sections
    "$PY" -c "import sys; from smartscope import bench; bench.run(sys.argv[1], quick=sys.argv[3] == '1', simulator=False, controller=False, scaling=True, positions=True, device=sys.argv[2])" \
      "$work/bench-$dev.json" "$dev" "$rehearse" > "$work/bench-$dev.txt" 2>&1 \
      || { tail -20 "$work/bench-$dev.txt"; return 1; } ;;
  sustained)
    "$PY" - "$work" "$dev" "$sustained_frames" "$sustained_sizes" <<'PY'
import json, sys
from smartscope.bench_scaling import measure_scaling
work, device, frames, sizes = sys.argv[1:5]
sizes = tuple(int(s) for s in sizes.split(","))
r = measure_scaling(frames=int(frames), sizes=sizes, device=device)
open(f"{work}/scaling-{frames}-{device}.json", "w").write(json.dumps(r, indent=2))
for size, e in r["sizes"].items():
    print(size, e["frames_per_s"], "frames/s", e["ms"], e["stages_ms"], e.get("peak_gpu_mb"))
PY
    ;;
  stages)
    "$PY" benchmarks/stages_2048.py --device "$dev" "${stages_args[@]}" \
      --json "$work/stages-2048-$dev.json" ;;
  store)  # the host's side: the frame is analysed once (on the CPU), then stored
    local rc=0
    "$PY" benchmarks/result_store.py "${store_args[@]}" --json "$work/result-store.json" || rc=1
    "$PY" benchmarks/result_store.py "${store_args[@]}" --denoised \
      --json "$work/result-store-denoised.json" || rc=1
    return $rc ;;
  *)
    echo "unknown part: $1 (tests, paced, profile, graphs, labels, ops, bench, sustained, stages, store)" >&2
    return 2 ;;
  esac
}
failed=""
for part in $parts; do  # a part that fails is reported; the others still run
  echo "== $part ($(date -u +%H:%M:%S))"
  t0=$SECONDS
  run_part "$part" || failed="$failed $part"
  echo "== $part took $((SECONDS - t0)) s"
  pack
done
if [ -n "$failed" ]; then
  echo "failed:$failed" >&2
  exit 1
fi
