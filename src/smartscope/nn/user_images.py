"""The user's own noisy frames for ``smartscope train n2v --data PATH``.

``PATH`` may be a TIFF file (a single image or a stack of planes), a folder of
TIFFs, a smartscope run folder or its ``data.ome.zarr`` (the raw acquisition
frames, not the autofocus sweeps). Every image comes back as a 2D float32
array; each problem is a :class:`~smartscope.nn.errors.ModelError` naming the
file and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartscope.nn.errors import ModelError

__all__ = ["MAX_RUN_FRAMES", "read_noisy_images", "split_for_validation"]

#: frames taken from a run folder at most (evenly spread over the run)
MAX_RUN_FRAMES = 256
_TIFF = (".tif", ".tiff")


def read_noisy_images(path: str | Path) -> tuple[list[np.ndarray], str]:
    """The 2D images in ``path`` and a one-line description of where they came from.

    Raises
    ------
    ModelError
        For a path that does not exist, holds no image, or an image that is
        not a single-channel 2D image or stack of them.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError("no such file or folder", path=p)
    if p.is_file():
        if p.suffix.lower() not in _TIFF:
            raise ModelError(
                "expected a TIFF file (.tif/.tiff), a folder of TIFFs, or a run "
                "folder / its data.ome.zarr",
                path=p,
            )
        planes = _tiff_planes(p)
        return planes, f"{len(planes)} image(s) of the user's TIFF {p}"
    run = _run_folder(p)
    if run is not None:
        frames = _run_frames(run)
        return frames, f"{len(frames)} raw frames of the smartscope run {run}"
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in _TIFF)
    if not files:
        raise ModelError(
            "no .tif/.tiff files here, and not a smartscope run folder "
            "(no data.ome.zarr)",
            path=p,
        )
    images = [a for f in files for a in _tiff_planes(f)]
    return images, f"{len(images)} image(s) from {len(files)} user TIFF(s) in {p}"


def _tiff_planes(path: Path) -> list[np.ndarray]:
    import tifffile

    try:
        a = np.asarray(tifffile.imread(path))
    except Exception as e:
        raise ModelError(f"cannot read the TIFF: {e}", path=path) from e
    a = np.squeeze(a)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
        raise ModelError(
            f"shape {a.shape} looks like an RGB(A) image; Noise2Void trains on "
            "single-channel images: save one channel per TIFF",
            path=path,
        )
    if a.ndim < 2 or min(a.shape[-2:]) < 16:
        raise ModelError(
            f"expected a 2D image (or a stack of them) of at least 16 x 16 pixels, "
            f"got shape {a.shape}",
            path=path,
        )
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ModelError(f"expected integer or float pixels, got {a.dtype}", path=path)
    planes = a.reshape(-1, *a.shape[-2:]).astype(np.float32)
    if not np.isfinite(planes).all():
        raise ModelError("the image holds NaN or infinite values", path=path)
    return list(planes)


def _run_folder(p: Path) -> Path | None:
    """The run folder ``p`` names (itself, or the parent of its data.ome.zarr)."""
    from smartscope.io.read_images import ZARR_NAME

    if p.name == ZARR_NAME or p.suffix == ".zarr":
        if not (p.parent / "events.jsonl").is_file():
            raise ModelError(
                "a data.ome.zarr is read with its run's events.jsonl (in the same "
                "folder), which is missing",
                path=p,
            )
        return p.parent
    if (p / ZARR_NAME).is_dir():
        return p
    return None


def _run_frames(run: Path) -> list[np.ndarray]:
    from smartscope.io.read_images import frame_places, frame_roles, read_frame

    try:
        places = frame_places(run)
        roles = frame_roles(run)
    except (OSError, KeyError, ValueError) as e:
        raise ModelError(f"cannot read the run's frames: {e}", path=run) from e
    indices = sorted(i for i in places if roles.get(i, "acquisition") == "acquisition")
    if not indices:
        raise ModelError("the run has no acquisition frames on disk", path=run)
    if len(indices) > MAX_RUN_FRAMES:
        pick = np.linspace(0, len(indices) - 1, MAX_RUN_FRAMES).round().astype(int)
        indices = [indices[i] for i in pick]
    return [read_frame(run, i).astype(np.float32) for i in indices]


def split_for_validation(
    images: list[np.ndarray], fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(training images, validation images, what was held out).

    Several images: whole images are held out. One image: a band of its rows
    (``fraction`` of them, at least 32) is held out, and the rest trained on.
    """
    if len(images) > 1:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(images))
        n_val = max(1, round(len(images) * fraction))
        val = [images[i] for i in idx[:n_val]]
        train = [images[i] for i in idx[n_val:]]
        return train, val, f"{n_val} of {len(images)} images held out"
    (a,) = images
    h = a.shape[0]
    rows = max(32, round(h * fraction))
    if h - rows < 32:
        return [a], [a], "one image too small to split: validated on itself"
    return (
        [a[: h - rows]],
        [a[h - rows :]],
        f"the last {rows} of the image's {h} rows held out",
    )
