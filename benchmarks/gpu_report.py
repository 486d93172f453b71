"""What `gpu_check.sh` measured, as Markdown for docs/benchmarks.md, with
each GPU target of issue 12 said met or not.

Reads ``OUT/gpu-check.tar.gz`` (or a folder it was unpacked into) and prints
the tables: the machine, the -m gpu tests, the targets (part ``paced``:
2048² at 100 frames/s with none skipped and frame→result p99 under 20 ms;
512² p99 under 5 ms; with the networks' CUDA graphs on, and off in part
``graphs``), where the time goes on the device (part ``profile``), the
sustained rate (part ``sustained``), the frame
sizes and positions (part ``bench``), one analysis stage against two
(``stages``) and the device labels against the host's (``labels``). A part
that did not run is said so.

Usage::

    python benchmarks/gpu_report.py OUT/gpu-check.tar.gz > /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import Any

#: issue 12's GPU targets: size -> (frames/s at least or None, p99 ms under)
TARGETS: dict[int, tuple[float | None, float]] = {2048: (100.0, 20.0), 512: (None, 5.0)}


def read_results(path: Path) -> dict[str, bytes]:
    """The files of a gpu_check result, by name (a .tar.gz or a folder)."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                out[Path(m.name).name] = f.read()
        return out


def _json(files: dict[str, bytes], prefix: str) -> Any | None:
    for name in sorted(files):
        if name.startswith(prefix) and name.endswith(".json"):
            return json.loads(files[name])
    return None


def _q(d: dict[str, Any]) -> str:
    """p50 / p95 / p99 / max ("none" where nothing was measured)."""
    if not d.get("n"):
        return "none"
    return " / ".join(f"{d[k]:g}" for k in ("p50", "p95", "p99", "max") if k in d)


def _graphs(run: dict[str, Any]) -> str:
    """Whether a ``paced`` run's networks replayed CUDA graphs: "on" (every
    model used them), "off" (asked), else per model what happened ("denoise
    failed: ...", "segment not used")."""
    asked = run["settings"].get("requested", {}).get("cuda_graphs", True)
    if not asked:
        return "off"
    models = run.get("cuda_graphs", {})
    said = []
    for role, m in models.items():
        if m.get("failed"):
            said.append(f"{role} failed: {m['failed']}")
        elif not m.get("used"):
            said.append(f"{role} not used")
    return "; ".join(said) if said else "on" if models else "unknown"


def _kept(settings: dict[str, Any]) -> str:
    """The images the results carried (older results: both), and whether
    the run stored the frames and results as a run does."""
    kept = settings.get("images_kept", ["denoised", "labels"])
    text = ", ".join(kept) if kept else "none (left on the card)"
    return text + (", all stored" if settings.get("store") else "")


def target_verdict(run: dict[str, Any]) -> str:
    """Whether a ``paced`` run meets its size's GPU target ("" when the size
    has none)."""
    size = run["settings"]["size_px"]
    if size not in TARGETS:
        return ""
    rate, p99 = TARGETS[size]
    lat = run["frame_to_result_ms"]
    ok = run["skipped"] == 0 and lat.get("n", 0) > 0 and lat["p99"] < p99
    if rate is not None:
        ok = ok and run["settings"]["rate_hz"] >= rate
        want = f"≥ {rate:g}/s, 0 skipped, p99 < {p99:g} ms"
    else:
        want = f"p99 < {p99:g} ms"
    return f"{'met' if ok else 'NOT met'} ({want})"


def report(files: dict[str, bytes]) -> str:
    """The Markdown."""
    lines: list[str] = []
    torch_line = files.get("torch.txt", b"").decode().strip()
    lines += ["### Machine", "", f"python, torch, device: `{torch_line or 'unknown'}`"]
    smi = files.get("nvidia-smi.txt", b"").decode().splitlines()
    gpu = [x.strip() for x in smi if "NVIDIA" in x and "Driver" not in x]
    if gpu:
        lines.append(f"nvidia-smi: `{' '.join(gpu[0].split())}`")
    tests = files.get("pytest-gpu.txt", b"").decode().strip().splitlines()
    lines += ["", f"-m gpu tests: `{tests[-1] if tests else 'did not run'}`", ""]

    lines += ["### Targets (part `paced`)", ""]
    paced = [n for n in files if n.startswith("paced-") and n.endswith(".jsonl")]
    runs = [json.loads(x) for n in paced for x in files[n].decode().splitlines() if x]
    if runs:
        lines += [
            "| size | CUDA graphs | images kept | frames/s fed | analysed / skipped | "
            "analysed/s | frame→result p50 / p95 / p99 / max (ms) | target |",
            "|---|---|---|---:|---:|---:|---:|---|",
        ]
        for r in runs:
            s = r["settings"]
            lines.append(
                f"| {s['size_px']}² | {_graphs(r)} | {_kept(s)} | {s['rate_hz']:g} | "
                f"{r['analysed']} / "
                f"{r['skipped']} | {r['analysed_per_s']} | "
                f"{_q(r['frame_to_result_ms'])} | {target_verdict(r)} |"
            )
        lines.append("")
        for r in runs:
            lines.append(
                f"- {r['settings']['size_px']}², CUDA graphs {_graphs(r)}, "
                "stages (ms, medians): "
                f"{r['stages_ms']}; inside the models: {r['model_stages_ms']}"
                + (
                    f"; the frame's write {_q(r['raw_write_ms'])} ms, storing a "
                    f"result {_q(r['storage_ms'])} ms, the analysis waited "
                    f"{r['storage_waited_s']} s for it"
                    if r["settings"].get("store")
                    else ""
                )
            )
    else:
        lines.append("part `paced` did not run")
    lines.append("")

    lines += ["### Where the time goes (part `profile`)", ""]
    prof = _json(files, "profile-")
    if prof:
        lines += [
            "| size | ms a frame (profiled) | device ms a frame | device busy | "
            "launches / graph replays / copies / host waits a frame |",
            "|---|---:|---:|---:|---|",
        ]
        for r in prof["sizes"]:
            lines.append(
                f"| {r['size_px']}² | {r['wall_ms_per_frame']:g} "
                f"({r['profiled_ms_per_frame']:g}) | {r['device_ms_per_frame']:g} | "
                f"{r.get('device_busy', '')} | {r['launches_per_frame']:g} / "
                f"{r['graph_launches_per_frame']:g} / {r['copies_per_frame']:g} / "
                f"{r['waits_per_frame']:g} |"
            )
        lines.append("")
        for r in prof["sizes"]:
            top = ", ".join(
                f"{t['op'][:60]} {t['ms_per_frame']:g}" for t in r["top_device"][:5]
            )
            host = ", ".join(
                f"{t['op'][:40]} {t['self_ms_per_frame']:g}" for t in r["top_host"][:5]
            )
            lines.append(
                f"- {r['size_px']}²: on the device (ms a frame) {top or 'none'}; "
                f"on the host {host or 'none'}"
            )
    else:
        lines.append("part `profile` did not run")
    lines.append("")

    lines += ["### Sustained (part `sustained`)", ""]
    sus = _json(files, "scaling-")
    if sus:
        lines += ["| size | frames | frames/s | ms median / p95 | peak GPU MB |"]
        lines += ["|---|---:|---:|---:|---:|"]
        for size, e in sus["sizes"].items():
            lines.append(
                f"| {size}² | {e['frames']} | {e['frames_per_s']} | "
                f"{e['ms']['median']} / {e['ms']['p95']} | {e.get('peak_gpu_mb', '')} |"
            )
    else:
        lines.append("part `sustained` did not run")
    lines.append("")

    lines += ["### Frame sizes and positions (part `bench`)", ""]
    bench = _json(files, "bench-")
    if bench and "scaling" in bench:
        lines += ["| size | ms median | × 512² | peak GPU MB |", "|---|---:|---:|---:|"]
        for size, e in bench["scaling"]["sizes"].items():
            lines.append(
                f"| {size}² | {e['ms']['median']} | {e['ratio_to_512']} | "
                f"{e.get('peak_gpu_mb', '')} |"
            )
        lines.append("")
    if bench and "positions" in bench:
        lines += [
            "| positions | frames | skipped | frame→action p50 / p95 / p99 / max |",
            "|---:|---:|---:|---:|",
        ]
        for n, e in bench["positions"]["runs"].items():
            lines.append(
                f"| {n} | {e['frames']} | {e['frames_skipped_analysis']} | "
                f"{_q(e['frame_to_action_ms'])} |"
            )
    if not bench:
        lines.append("part `bench` did not run")
    lines.append("")

    lines += ["### One analysis stage or two (part `stages`)", ""]
    st = _json(files, "stages-")
    if st:
        for n, rs in st["runs"].items():
            ms = ", ".join(str(r["ms_per_frame"]) for r in rs)
            lines.append(f"- {st['size']}², stages {n}: {ms} ms a frame")
    else:
        lines.append("part `stages` did not run")
    lines.append("")

    lines += ["### Area filter and measurements, host or device (part `ops`)", ""]
    host = _json(files, "host-tables-")
    if host:
        lines += [
            "| size | objects | host: filter + measure (ms) | device, with the "
            "copies back (ms) | table from the sums (ms) | kernels / syncs |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in host["rows"]:
            lines.append(
                f"| {r['size']}² | {r['objects']} | "
                f"{r['filter_by_area_ms']:g} + {r['measure_ms']:g} | "
                f"{r.get('device_filter_measure_ms', '')} | "
                f"{r.get('table_from_sums_ms', '')} | "
                f"{r.get('device_kernels', '')} / {r.get('device_syncs', '')} |"
            )
    else:
        lines.append("part `ops` did not run")
    lines.append("")

    lines += ["### Storing an analysed frame (part `store`)", ""]
    stores = [
        (name, json.loads(files[name]))
        for name in sorted(files)
        if name.startswith("result-store") and name.endswith(".json")
    ]
    if stores:
        lines += [
            "| size (objects) | stored | on the analysis thread: median (p95) ms "
            "| handed over: median (p95) ms |",
            "|---|---|---:|---:|",
        ]
        for _, st in stores:
            for size, e in st["sizes"].items():
                what = "rows + labels" + (" + denoised" if e["denoised_stored"] else "")
                on, off = e["ms"]["on_thread"], e["ms"]["handed_over"]
                lines.append(
                    f"| {size}² ({e['objects']}) | {what} | {on['median']} "
                    f"({on['p95']}) | {off['median']} ({off['p95']}) |"
                )
    else:
        lines.append("part `store` did not run")
    lines.append("")

    lines += ["### Device labels against the host's (part `labels`)", ""]
    lab = _json(files, "device-labels-")
    lines.append(
        f"`{json.dumps(lab['summary'])}`" if lab else "part `labels` did not run"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="gpu-check.tar.gz or its folder")
    print(report(read_results(ap.parse_args().results)), end="")


if __name__ == "__main__":
    main()
