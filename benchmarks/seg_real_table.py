"""Per-image table (markdown) from ``benchmarks/seg_real_images.py`` results.

Each ``--result LABEL=FILE`` becomes a column of mean AP@0.5 / AP@0.75 per
image; every row names the image's source (the section of
``benchmarks/data/real_seg_SOURCES.md`` it comes from). docs/models.md's
per-image table is this script's output.

Usage::

    python benchmarks/seg_real_table.py --result nuclei-seg=A.json \
        --result nuclei-seg-sim=B.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# name prefix -> source (section of benchmarks/data/real_seg_SOURCES.md)
SOURCES = {
    "coelho2009_gnf_U2OS": "Coelho et al. 2009, U2OS, Hoechst (2c)",
    "coelho2009_ic100_NIH3T3": "Coelho et al. 2009, NIH 3T3, Hoechst (2c)",
    "ctc_Fluo-N2DH-GOWT1": "Cell Tracking Challenge GOWT1, GFP-Oct4 (2a)",
    "ctc_Fluo-N2DL-HeLa": "Cell Tracking Challenge HeLa, H2B-GFP (2b)",
    "aitslab_hovernet": "Aits lab screen, nuclear stain (2d)",
}


def source_of(image: str) -> str:
    for prefix, source in SOURCES.items():
        if image.startswith(prefix):
            return source
    raise SystemExit(f"{image}: no source known for this name (SOURCES in {__file__})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--result",
        action="append",
        required=True,
        metavar="LABEL=FILE",
        help="a seg_real_images.py --json file, as a column named LABEL",
    )
    args = ap.parse_args()
    columns: list[tuple[str, dict[str, dict]]] = []
    for item in args.result:
        label, sep, file = item.partition("=")
        if not sep:
            raise SystemExit(f"--result {item!r}: expected LABEL=FILE")
        data = json.loads(Path(file).read_text())
        rows = {r["image"]: r for group in data["rows"].values() for r in group}
        columns.append((label, rows))
    images = sorted(columns[0][1])
    for label, rows in columns[1:]:
        if sorted(rows) != images:
            raise SystemExit(f"--result {label}: not the same images as the first")
    head = " | ".join(f"{label} AP@0.5 / 0.75" for label, _ in columns)
    print(f"| image | source | {head} |")
    print("|---|---|" + "---:|" * len(columns))
    for image in images:
        cells = " | ".join(
            f"{rows[image]['ap50']:.3f} / {rows[image]['ap75']:.3f}"
            for _, rows in columns
        )
        print(f"| {image} | {source_of(image)} | {cells} |")


if __name__ == "__main__":
    main()
