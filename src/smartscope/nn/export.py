"""Writing a model as a bioimage.io model package (a folder or a ``.zip``).

A package holds ``weights.pt`` (the state dict, rebuilt by
:mod:`smartscope.nn.architectures` from the card's ``architecture``),
optionally ``weights_torchscript.pt`` (the same network traced, needs only
PyTorch), ``rdf.yaml`` (bioimage.io format 0.5 with smartscope's card under
``config.smartscope``), ``README.md``, ``test_input.npy`` (a raw (1, 1, Y, X)
float32 test image), ``test_output.npy`` (what the package outputs for it,
after the card's declared pre- and post-processing) and ``cover.png``.
:func:`write_package_files` writes all but the weights into a folder that
already has ``weights.pt`` (:func:`smartscope.nn.model.save_model` uses it,
so every saved model folder is a valid package); :func:`export_model` writes
a package from a loaded model. ``bioimageio.spec`` validates these packages
and ``bioimageio.core``'s ``test_model`` passes on both weights formats.
"""

from __future__ import annotations

import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from smartscope.nn.architectures import DenoisingUNet, SegmentationUNet
from smartscope.nn.card import (
    TORCHSCRIPT_NAME,
    WEIGHTS_NAME,
    ModelCard,
    bioimageio_name,
    package_sizes,
    write_rdf,
    write_readme,
)
from smartscope.nn.description import ModelDescription, describe_model
from smartscope.nn.errors import ModelError
from smartscope.nn.model import Model
from smartscope.nn.processing import apply_steps

__all__ = [
    "COVER_NAME",
    "TEST_INPUT_NAME",
    "TEST_OUTPUT_NAME",
    "export_model",
    "package_network",
    "run_package",
    "synthetic_image",
    "write_package_files",
]

TEST_INPUT_NAME = "test_input.npy"
TEST_OUTPUT_NAME = "test_output.npy"
COVER_NAME = "cover.png"


def synthetic_image(size: int = 128, *, seed: int = 0) -> np.ndarray:
    """A deterministic raw test image: blurred blobs (nuclei-like, 8-20 px
    across) on a 100 ADU background with Poisson noise.

    Returns
    -------
    (size, size) float32, camera-like intensities (ADU)
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(max(4, size * size // 1400)):
        cy, cx = rng.uniform(8, size - 8, 2)
        r = rng.uniform(4, 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] += rng.uniform(150, 600)
    img = ndi.gaussian_filter(img, 1.5) + 100.0
    return rng.poisson(img).astype(np.float32)


def package_network(card: ModelCard, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network a package's ``pytorch_state_dict`` entry builds, weights
    loaded, in eval mode on the CPU (what bioimage.io tools run)."""
    kwargs: dict[str, Any] = card.unet.model_dump()
    net: torch.nn.Module
    if card.kind == "denoise":
        n = card.normalization
        net = DenoisingUNet(**kwargs, p_low=n.p_low, p_high=n.p_high)
    else:
        net = SegmentationUNet(**kwargs)
    net.load_state_dict(state, strict=True)
    return net.eval()


def run_package(
    network: torch.nn.Module, description: ModelDescription, x: np.ndarray
) -> np.ndarray:
    """What a package outputs for ``x``: the declared preprocessing, the
    network, the declared postprocessing (as ``bioimageio.core`` runs it).

    Parameters
    ----------
    x : (1, 1, Y, X) float32 raw image, Y and X valid sizes for the card

    Returns
    -------
    (1, C, Y, X) array of the card's output dtype
    """
    pre = apply_steps(description.preprocessing, x)
    with torch.inference_mode():
        y = network(torch.from_numpy(np.ascontiguousarray(pre, np.float32))).numpy()
    out = apply_steps(
        description.postprocessing, y, references={description.input_id: x}
    )
    return out.astype(description.output_dtype, copy=False)


def _test_size(card: ModelCard, wanted: int = 128) -> int:
    low, step, _ = package_sizes(card.unet)
    return low + max(0, -(-(wanted - low) // step)) * step


def _write_cover(path: Path, x: np.ndarray, y: np.ndarray, kind: str) -> None:
    """A 2:1 PNG: the test input on the left, what the package makes of it on
    the right (denoised, on the same grey scale; or nuclei in orange)."""
    from PIL import Image

    from smartscope.nn.normalize import percentile_range

    low, high = percentile_range(x, p_low=0.5, p_high=99.8)

    def grey(a: np.ndarray) -> np.ndarray:
        return np.clip((a - low) / (high - low) * 255, 0, 255).astype(np.uint8)

    left = np.repeat(grey(x)[..., None], 3, axis=2)
    if kind == "denoise":
        right = np.repeat(grey(y[0])[..., None], 3, axis=2)
    else:
        fg = np.clip(y[0], 0, 1)[..., None]
        tint = np.array([255, 120, 0], np.float32)
        right = (left * (1 - 0.55 * fg) + tint * 0.55 * fg).astype(np.uint8)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path, optimize=True)


def write_package_files(
    folder: str | Path,
    card: ModelCard,
    *,
    name: str,
    description: str,
    torchscript: bool = False,
) -> Path:
    """Complete a model folder that holds ``weights.pt`` as a bioimage.io package.

    Writes ``README.md``, ``rdf.yaml``, ``test_input.npy``, ``test_output.npy``,
    ``cover.png`` and, with ``torchscript``, ``weights_torchscript.pt``.
    Every file is a function of the weights and the card (a seeded test
    image), so rewriting a folder gives the same files. Returns ``folder``.
    """
    folder = Path(folder)
    name = bioimageio_name(name)  # the card's name, and so the loaded model's
    wpath = folder / WEIGHTS_NAME
    state = torch.load(wpath, map_location="cpu", weights_only=True)
    net = package_network(card, state)
    size = _test_size(card)
    x = synthetic_image(size)[None, None]
    weights = {"pytorch_state_dict": wpath}
    if torchscript:
        example = torch.from_numpy(x)
        methods = {"forward": example}
        if card.kind == "denoise":
            # smartscope normalises frames itself (whole frame, before tiling)
            # and calls the bare U-Net of a TorchScript-only package
            methods["forward_normalized"] = example
        # bioimage.io consumers read TorchScript; torch now flags it deprecated
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace_module(net, methods, check_trace=False)
            traced.save(str(folder / TORCHSCRIPT_NAME))
        weights["torchscript"] = folder / TORCHSCRIPT_NAME
    write_readme(folder, name=name, description=description, card=card)
    rdf_path = write_rdf(
        folder,
        name=name,
        description=description,
        card=card,
        weights=weights,
        test_tensors=(TEST_INPUT_NAME, TEST_OUTPUT_NAME),
        covers=(COVER_NAME,),
    )
    # the test output follows the card as written: its own processing steps
    desc = describe_model(yaml.safe_load(rdf_path.read_text()), rdf_path)
    y = run_package(net, desc, x)
    np.save(folder / TEST_INPUT_NAME, x)
    np.save(folder / TEST_OUTPUT_NAME, y)
    _write_cover(folder / COVER_NAME, x[0, 0], y[0], card.kind)
    return folder


def _package_file(source: Path | None, name: str = WEIGHTS_NAME) -> bytes | None:
    """The file ``name`` (default ``weights.pt``) of the folder or .zip
    package a model came from."""
    if source is None:
        return None
    if source.is_file() and source.suffix == ".zip":
        with zipfile.ZipFile(source) as zf:
            if name in zf.namelist():
                return zf.read(name)
        return None
    src = source / name
    return src.read_bytes() if src.is_file() else None


def export_model(model: Model, path: str | Path, *, torchscript: bool = True) -> Path:
    """Write ``model`` as a bioimage.io package: a ``.zip`` file, or a folder if
    ``path`` has no ``.zip`` suffix (it may be the model's own folder, to
    rewrite its card and test files). Returns the path written.

    Raises
    ------
    ModelError
        If the model has no state dict to package (a TorchScript-only package,
        or a model that was never saved) or is not a smartscope model.
    """
    if not isinstance(model, Model):
        raise ModelError(
            f"{model!r} is a bioimage.io package smartscope did not write; it is "
            "a package already: use it as it is",
            path=getattr(model, "path", None),
        )
    path = Path(path)
    state = _package_file(model.path)
    if state is None:
        raise ModelError(
            f"no {WEIGHTS_NAME} (state dict) to package: export a model saved with "
            "save_model or loaded from a folder or package that has one",
            path=model.path,
        )
    description = str(model.rdf.get("description", model.name))
    card = model.card
    # the int8 copy travels with the weights it was made from, or not at all
    int8 = _package_file(model.path, card.int8.source) if card.int8 else None
    if int8 is None:
        card = card.model_copy(update={"int8": None})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if path.suffix == ".zip" else path
        folder.mkdir(parents=True, exist_ok=True)
        (folder / WEIGHTS_NAME).write_bytes(state)
        if int8 is not None and card.int8 is not None:
            (folder / card.int8.source).write_bytes(int8)
        if not torchscript:
            (folder / TORCHSCRIPT_NAME).unlink(missing_ok=True)
        write_package_files(
            folder,
            card,
            name=model.name,
            description=description,
            torchscript=torchscript,
        )
        if path.suffix != ".zip":
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    zf.write(f, f.name)
    return path
