"""Export a model as a bioimage.io model package.

``export_model(model, "pkg.zip")`` writes a zip holding TorchScript weights
(and the state dict, so smartscope can rebuild the network exactly),
``rdf.yaml``, a README and a test input/output pair (``test_input.npy``:
(1, 1, Y, X) float32 normalised input; ``test_output.npy``: the network's raw
(1, C, Y, X) output on it). ``load_model("pkg.zip")`` (or the unzipped folder)
loads it back.
"""

from __future__ import annotations

import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from smartscope.nn.card import TORCHSCRIPT_NAME, WEIGHTS_NAME, write_rdf, write_readme
from smartscope.nn.model import Model
from smartscope.nn.unet import UNet

__all__ = ["export_model"]


def _test_input(model: Model, size: int = 128) -> np.ndarray:
    """A deterministic test image: blurred random blobs, normalised like real input."""
    from scipy import ndimage as ndi

    from smartscope.nn.normalize import normalize, percentile_range

    rng = np.random.default_rng(0)
    img = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(12):
        cy, cx, r = (
            rng.uniform(10, size - 10),
            rng.uniform(10, size - 10),
            rng.uniform(4, 10),
        )
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] += rng.uniform(0.5, 1.0)
    img = ndi.gaussian_filter(img, 1.0) + rng.normal(0, 0.05, img.shape).astype(
        np.float32
    )
    n = model.card.normalization
    return normalize(img, *percentile_range(img, p_low=n.p_low, p_high=n.p_high))


def _state_dict_bytes(source: Path | None) -> bytes | None:
    """The ``weights.pt`` of the folder or .zip package a model came from."""
    if source is None:
        return None
    if source.is_file() and source.suffix == ".zip":
        with zipfile.ZipFile(source) as zf:
            if WEIGHTS_NAME in zf.namelist():
                return zf.read(WEIGHTS_NAME)
        return None
    src = source / WEIGHTS_NAME
    return src.read_bytes() if src.is_file() else None


def export_model(model: Model, path: str | Path, *, torchscript: bool = True) -> Path:
    """Write ``model`` as a bioimage.io package: a ``.zip`` file, or a folder if
    ``path`` has no ``.zip`` suffix. Returns the path written."""
    path = Path(path)
    net = model.predictor.network
    state = _state_dict_bytes(model.path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if path.suffix == ".zip" else path
        folder.mkdir(parents=True, exist_ok=True)
        weights: dict[str, Path] = {}
        if state is not None:
            # the unfused state dict, so training can resume from the package
            (folder / WEIGHTS_NAME).write_bytes(state)
            weights["pytorch_state_dict"] = folder / WEIGHTS_NAME
            net = UNet(model.card.unet)
            net.load_state_dict(
                torch.load(folder / WEIGHTS_NAME, map_location="cpu", weights_only=True)
            )
            net.eval()
        net = net.to("cpu")
        x = _test_input(model)
        with torch.inference_mode():
            y = net(torch.from_numpy(x)[None, None]).numpy()
        np.save(folder / "test_input.npy", x[None, None])
        np.save(folder / "test_output.npy", y)
        if torchscript:
            example = torch.from_numpy(x)[None, None]
            # bioimage.io consumers read TorchScript; torch now flags it deprecated
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.trace(net, example, check_trace=False)
                traced.save(str(folder / TORCHSCRIPT_NAME))
            weights["torchscript"] = folder / TORCHSCRIPT_NAME
        card = model.card
        description = str(model.rdf.get("description", model.name))
        write_readme(folder, name=model.name, description=description, card=model.card)
        write_rdf(
            folder,
            name=model.name,
            description=description,
            card=card,
            weights=weights,
            test_tensors=("test_input.npy", "test_output.npy"),
        )
        if path.suffix != ".zip":
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, f.name)
    return path
