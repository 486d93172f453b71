"""The demo's contact sheet: raw frames beside the simulator's noise-free
image, with the true nuclei outlined, as one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["contact_sheet", "write_png"]

_OUTLINE_RGB = {
    "interphase": (255, 200, 0),
    "mitosis": (255, 0, 220),
    "dead": (0, 170, 255),
}
_BACKGROUND_RGB = (24, 24, 24)
_TEXT_RGB = (235, 235, 235)


def contact_sheet(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    mitotic_ids: Sequence[Sequence[np.ndarray]] | None = None,
    dead_ids: Sequence[Sequence[np.ndarray]] | None = None,
    tile_px: int = 256,
    gap_px: int = 4,
    percentiles: tuple[float, float] = (0.5, 99.95),
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Tile images into a grid with their label outlines drawn in colour.

    Parameters
    ----------
    images : (R, C, Y, X) ndarray
        One image per tile (rows, columns), any real dtype.
    labels : (R, C, Y, X) int ndarray
        Instance labels on the same grid; 0 is background.
    mitotic_ids, dead_ids : (R, C) nested sequences of 1-D int arrays
        Label values to outline in the mitosis / dead colour instead of the
        interphase colour.
    tile_px : int
        Approximate tile side: images are averaged down by the integer factor
        ``round(X / tile_px)`` (labels take every factor-th pixel).
    percentiles : (low, high)
        Contrast stretch, computed over all tiles together so that intensity
        changes over time (bleaching) stay visible.
    row_titles, col_titles, title : text drawn in the margins (optional).

    Returns
    -------
    (H, W, 3) uint8 ndarray
        RGB image; grey where no outline is drawn (R == G == B there).
    """
    from skimage.segmentation import find_boundaries
    from skimage.transform import downscale_local_mean

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or labels.shape != images.shape:
        raise ValueError(
            f"images and labels must both be (rows, cols, Y, X); got {images.shape} "
            f"and {labels.shape}"
        )
    n_rows, n_cols, _, w = images.shape
    f = max(1, round(w / tile_px))
    small = downscale_local_mean(images.astype(np.float32), (1, 1, f, f))
    lab = labels[:, :, ::f, ::f]
    th, tw = small.shape[2:]
    lo, hi = np.percentile(small, percentiles)
    grey = np.clip((small - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    grey = (grey * 255.0 + 0.5).astype(np.uint8)

    left = 0 if row_titles is None else 190
    top = (0 if title is None else 22) + (0 if col_titles is None else 20)
    height = top + n_rows * th + (n_rows + 1) * gap_px
    width = left + n_cols * tw + (n_cols + 1) * gap_px
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[...] = _BACKGROUND_RGB
    for r in range(n_rows):
        for c in range(n_cols):
            tile = np.repeat(grey[r, c][:, :, None], 3, axis=2)
            edge = find_boundaries(lab[r, c], mode="inner")
            tile[edge] = _OUTLINE_RGB["interphase"]
            for ids, state in ((mitotic_ids, "mitosis"), (dead_ids, "dead")):
                if ids is not None and len(ids[r][c]):
                    tile[edge & np.isin(lab[r, c], ids[r][c])] = _OUTLINE_RGB[state]
            y0 = top + gap_px + r * (th + gap_px)
            x0 = left + gap_px + c * (tw + gap_px)
            sheet[y0 : y0 + th, x0 : x0 + tw] = tile
    if title is None and row_titles is None and col_titles is None:
        return sheet
    return _draw_titles(
        sheet,
        title=title,
        row_titles=row_titles,
        col_titles=col_titles,
        top=top,
        left=left,
        tile=(th, tw),
        gap_px=gap_px,
    )


def _draw_titles(
    sheet: np.ndarray,
    *,
    title: str | None,
    row_titles: Sequence[str] | None,
    col_titles: Sequence[str] | None,
    top: int,
    left: int,
    tile: tuple[int, int],
    gap_px: int,
) -> np.ndarray:
    # Pillow comes with scikit-image; text is the only thing numpy can't draw.
    # Its built-in font has no "µ": titles spell "um".
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(sheet)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    th, tw = tile
    y = 4
    if title is not None:
        draw.text((gap_px, y), title, fill=_TEXT_RGB, font=font)
        y += 22
    if col_titles is not None:
        for c, text in enumerate(col_titles):
            draw.text(
                (left + gap_px + c * (tw + gap_px) + 2, y),
                text,
                fill=_TEXT_RGB,
                font=font,
            )
    if row_titles is not None:
        for r, text in enumerate(row_titles):
            y0 = top + gap_px + r * (th + gap_px) + th // 2 - 8
            draw.text((gap_px + 2, y0), text, fill=_TEXT_RGB, font=font)
    return np.asarray(img)


def write_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG", optimize=True)
