"""A realtime run of the demo's analysis at a given rate, beside N busy processes.

Run from the repository root::

    python benchmarks/realtime_contention.py INTERVAL_S LOOPS BURNERS THREADS OUT [PRECISION [REACT]]
    python benchmarks/realtime_contention.py 0.1 600 2 auto /tmp/rt/b10
    python benchmarks/realtime_contention.py 0.1 600 2 auto /tmp/rt/b10f float32
    python benchmarks/realtime_contention.py 0.05 600 0 auto /tmp/rt/q20 auto every-frame

``protocols/demo.yaml`` (denoise-care, nuclei-seg, center_on) in realtime at
one frame every INTERVAL_S for LOOPS frames, 10 ms exposures (the adaptive
exposure reaction left out so the rate stays the one asked for), nothing but
the raw frames saved; BURNERS pure-Python busy loops in other processes;
``analysis.threads`` THREADS (an integer or ``auto``) and
``analysis.precision`` PRECISION (default ``auto``). REACT ``demo`` (the
default) keeps the demo's ``center_on``, which moves the stage only when the
nucleus leaves a dead band of 5% of the field (a handful of actions a run);
``every-frame`` sets the dead band to 0, so the stage follows the nucleus on
every frame and frame->action is measured on hundreds of actions. Prints the summary's
frames, frames analysed and skipped, and the frame->result and
frame->action latencies. The protocol and the busy processes are
``smartscope.bench_realtime``'s (what ``smartscope bench --realtime`` runs).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(interval, loops, burners, threads, out, precision="auto", react="demo"):
    if react not in ("demo", "every-frame"):
        raise SystemExit(f"REACT must be demo or every-frame, not {react!r}")
    from smartscope.bench_realtime import busy_processes, realtime_protocol
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    d = realtime_protocol(interval, loops, every_frame=react == "every-frame")
    d["analysis"]["threads"] = threads
    d["analysis"]["precision"] = precision
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    p = Protocol.model_validate(d)
    with busy_processes(burners):
        core = load_core(seed=p.seed, scene=p.scene, time_mode="realtime")
        try:
            s = Controller(core, p, out_dir=out).run()
        finally:
            release_core(core)
    print(
        json.dumps(
            {
                "interval": interval,
                "burners": burners,
                "threads": threads,
                "precision": precision,
                "react": react,
                "frames": s["frames_acquired"],
                "analysed": s["frames_analysed"],
                "skipped": s["frames_skipped_analysis"],
                "f2r": s["latency_frame_to_result_ms"],
                "f2a": s["latency_frame_to_action_ms"],
                "wall_s": s["wall_time_s"],
            }
        )
    )


if __name__ == "__main__":
    a = sys.argv[1:]
    main(
        float(a[0]),
        int(a[1]),
        int(a[2]),
        a[3] if a[3] == "auto" else int(a[3]),
        a[4],
        *a[5:7],
    )
