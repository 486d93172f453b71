"""Label and denoised images, stored next to the raw frames in ``data.ome.zarr``.

Raw frames are written by pymmcore-plus's OME-Zarr sink (ome-writers) as a
``(frame, y, x)`` array ``data.ome.zarr/0``. Derived images use the same frame
axis: ``labels/nuclei/0`` (OME-NGFF image-label) and ``denoised/0``. Frames that
were skipped for analysis stay zero.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DerivedImageStore"]


def _multiscales(name: str, pixel_um: float) -> dict[str, Any]:
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "t", "type": "time"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1.0, pixel_um, pixel_um]}
                        ],
                    }
                ],
            }
        ],
    }


class DerivedImageStore:
    """One growing ``(frame, y, x)`` zarr array, written by frame index."""

    def __init__(self, root: str | Path, name: str, *, dtype: str, label: bool) -> None:
        self.root = Path(root)
        self.name = name
        self.dtype = np.dtype(dtype)
        self.label = label
        self._arr: Any = None
        self._lock = threading.Lock()

    def _create(self, shape: tuple[int, int], pixel_um: float) -> None:
        import zarr

        if self.label:
            parent = zarr.open_group(str(self.root / "labels"), mode="a")
            parent.attrs["ome"] = {"version": "0.5", "labels": [self.name]}
            grp = parent.require_group(self.name)
            attrs = _multiscales(self.name, pixel_um)
            attrs["image-label"] = {"version": "0.5", "source": {"image": "../../"}}
        else:
            grp = zarr.open_group(str(self.root / self.name), mode="a")
            attrs = _multiscales(self.name, pixel_um)
        grp.attrs["ome"] = attrs
        self._arr = grp.create_array(
            "0",
            shape=(0, *shape),
            chunks=(1, *shape),
            dtype=self.dtype,
            fill_value=0,
            overwrite=True,
        )

    def write(self, frame_index: int, image: np.ndarray, pixel_um: float) -> None:
        with self._lock:
            if self._arr is None:
                self._create(image.shape, pixel_um)
            if image.shape != tuple(self._arr.shape[1:]):
                return  # frame size changed mid-run: keep the first geometry
            if frame_index >= self._arr.shape[0]:
                self._arr.resize((frame_index + 1, *self._arr.shape[1:]))
            self._arr[frame_index] = image.astype(self.dtype, copy=False)

    def finalize(self, n_frames: int) -> None:
        """Pad to the number of raw frames, so both axes agree."""
        with self._lock:
            if self._arr is not None and self._arr.shape[0] < n_frames:
                self._arr.resize((n_frames, *self._arr.shape[1:]))
