"""Finding a model and checking its files without loading it (no torch import).

A protocol names its denoiser and segmenter by shipped name or by path; this
module finds the model the way :func:`smartscope.nn.load_model` does and reads
what its card says it is, so that a model in the wrong slot, a missing or
garbled card, or a weights file that is missing, corrupt or not a PyTorch
archive is refused when the protocol loads, in milliseconds, before the
network is built or any hardware moves.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from smartscope.nn.errors import ModelError

__all__ = ["ModelFiles", "available_models", "check_model_files", "resolve_model_path"]

RDF_NAME = "rdf.yaml"
Kind = Literal["denoise", "segment", "event"]


@dataclass(frozen=True)
class ModelFiles:
    """What a model's files say it is."""

    kind: Kind
    """``config.smartscope.kind`` of its card: "denoise", "segment" or "event"
    (the mitosis classifier, :mod:`smartscope.nn.mitosis_model`)."""
    path: Path
    """The model folder, or its ``.zip`` package."""
    name: str
    """The card's ``name`` (the folder's name when the card has none)."""


def available_models() -> list[str]:
    """Names of the models shipped in the ``models/`` folder."""
    from smartscope._data import data_dir

    try:
        root = data_dir("models")
    except FileNotFoundError:
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{RDF_NAME}"))


def resolve_model_path(name_or_path: str | Path) -> Path:
    """The model folder, ``rdf.yaml`` or ``.zip`` package that ``name_or_path``
    stands for: an existing path (relative to the working directory), else a
    shipped model's name. Raises :class:`ModelError` listing the shipped models."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if (
        isinstance(name_or_path, str)
        and "/" not in name_or_path
        and "\\" not in name_or_path
    ):
        from smartscope._data import data_dir

        try:
            candidate = data_dir("models") / name_or_path
        except FileNotFoundError:
            candidate = None
        if candidate is not None and candidate.exists():
            return candidate
    raise ModelError(
        f"no model named or at {str(name_or_path)!r}; shipped models: "
        f"{', '.join(available_models()) or '(none)'}; or give a model folder, "
        "its rdf.yaml, or a .zip package"
    )


def check_model_files(name_or_path: str | Path) -> ModelFiles:
    """Find a model and check its card and weights file, without torch.

    Checks: the card is strict YAML with ``type: model`` and a
    ``config.smartscope.kind`` of "denoise", "segment" or "event" (or, for a
    bioimage.io package smartscope did not write, a description
    :func:`smartscope.nn.description.describe_model` accepts, which gives
    the kind); it names weights (``pytorch_state_dict`` or ``torchscript``)
    inside the model; the weights file exists, is a whole PyTorch zip archive
    (torch.save since 1.6 and TorchScript write one) and matches the card's
    sha256.

    Raises
    ------
    ModelError
        Naming the file that is wrong and what was expected.
    """
    path = resolve_model_path(name_or_path)
    if path.is_file() and path.suffix == ".zip":
        return _check_package(path)
    from smartscope.nn.description import card_name

    folder = path.parent if path.is_file() else path
    if path.is_file():
        if card_name([path.name]) is None:
            raise ModelError(
                f"expected a model folder, its {RDF_NAME} or a .zip package", path=path
            )
        card = path.name
    else:
        found = card_name([p.name for p in folder.iterdir() if p.is_file()])
        if found is None:
            raise ModelError(f"model folder has no {RDF_NAME}", path=folder)
        card = found
    rdf_path = folder / card
    rdf = _read_card(rdf_path.read_bytes(), rdf_path)
    kind, source, sha = _kind_and_weights(rdf, rdf_path)
    wpath = folder / source
    if not wpath.is_file():
        raise ModelError(f"weights file named in {card} does not exist", path=wpath)
    _check_weights(wpath, _sha256_file(wpath) if sha else None, sha, wpath)
    return ModelFiles(kind, folder, str(rdf.get("name") or folder.name))


def _check_package(path: Path) -> ModelFiles:
    from smartscope.nn.description import card_name
    from smartscope.yaml_strict import MAX_BYTES

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            card = card_name(names)
            if card is None:
                raise ModelError(
                    f"package has no {RDF_NAME} (or bioimageio.yaml) at its top level",
                    path=path,
                )
            if zf.getinfo(card).file_size > MAX_BYTES:
                raise ModelError(
                    f"{card} is larger than {MAX_BYTES:,} bytes", path=path
                )
            where = Path(f"{path}/{card}")
            rdf = _read_card(zf.read(card), where)
            kind, source, sha = _kind_and_weights(rdf, where)
            if source not in names:
                raise ModelError(
                    f"weights file {source!r} named in {card} is not in the package",
                    path=path,
                )
            data = zf.read(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"not a valid .zip model package: {e}", path=path) from e
    _check_weights(
        io.BytesIO(data),
        hashlib.sha256(data).hexdigest(),
        sha,
        Path(f"{path}/{source}"),
    )
    return ModelFiles(kind, path, str(rdf.get("name") or path.stem))


def _kind_and_weights(rdf: dict[str, Any], where: Path) -> tuple[Kind, str, str | None]:
    """The model's kind and the weights file (and sha256) it will be loaded from:
    from its ``config.smartscope`` section, or else from its bioimage.io
    description (a package smartscope did not write)."""
    config = rdf.get("config")
    if isinstance(config, dict) and "smartscope" in config:
        return (_card_kind(rdf, where), *_weights_entry(rdf, where))
    from smartscope.nn.description import describe_model

    try:
        d = describe_model(rdf, where)
    except ModelError as e:
        raise ModelError(
            "no 'config.smartscope' section (not a smartscope model card), and not "
            f"a bioimage.io model smartscope can run: {e.message}",
            path=where,
        ) from None
    return d.kind, d.weights.source, d.weights.sha256


def _read_card(raw: bytes, where: Path) -> dict[str, Any]:
    from smartscope.yaml_strict import YAMLInputError, load_yaml_bytes

    try:
        rdf = load_yaml_bytes(raw, path=where, what="model card").data
    except YAMLInputError as e:
        line = f"line {e.line}: " if e.line is not None else ""
        raise ModelError(f"{line}{e.problem}", path=where) from None
    if not isinstance(rdf, dict):
        raise ModelError("model card must be a YAML mapping", path=where)
    if rdf.get("type") != "model":
        raise ModelError(f"'type' must be 'model', got {rdf.get('type')!r}", path=where)
    return rdf


def _card_kind(rdf: dict[str, Any], where: Path) -> Kind:
    config = rdf.get("config")
    section = config.get("smartscope") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise ModelError(
            "no 'config.smartscope' section: not a smartscope model card", path=where
        )
    kind = section.get("kind")
    if kind not in ("denoise", "segment", "event"):
        raise ModelError(
            "config.smartscope.kind must be 'denoise', 'segment' or 'event', "
            f"got {kind!r}",
            path=where,
        )
    return kind  # type: ignore[no-any-return]


def _weights_entry(rdf: dict[str, Any], where: Path) -> tuple[str, str | None]:
    weights = rdf.get("weights")
    if not isinstance(weights, dict) or not (
        "pytorch_state_dict" in weights or "torchscript" in weights
    ):
        raise ModelError(
            "'weights' must name 'pytorch_state_dict' or 'torchscript' weights",
            path=where,
        )
    fmt = "pytorch_state_dict" if "pytorch_state_dict" in weights else "torchscript"
    entry = weights[fmt]
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
        raise ModelError(f"weights.{fmt}.source is missing", path=where)
    source = entry["source"]
    pure = PurePosixPath(source.replace("\\", "/"))
    if not source or pure.is_absolute() or ".." in pure.parts:
        raise ModelError(
            f"weights.{fmt}.source must name a file inside the model, got {source!r}",
            path=where,
        )
    sha = entry.get("sha256")
    return source, str(sha) if sha else None


def _check_weights(
    data: Path | io.BytesIO, actual: str | None, expected: str | None, at: Path
) -> None:
    """The weights match the card's checksum and are a whole PyTorch archive
    (a zip with a ``data.pkl`` whose members pass their CRC check)."""
    if expected and actual != expected:
        raise ModelError(
            f"weights file is corrupt: its sha256 does not match the one in {RDF_NAME}",
            path=at,
        )
    problem = None
    try:
        with zipfile.ZipFile(data) as zf:
            if not any(n.endswith("data.pkl") for n in zf.namelist()):
                problem = "it holds no data.pkl"
            elif zf.testzip() is not None:
                problem = "a member fails its CRC check"
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        problem = "it is not a zip archive"
    if problem is not None:
        raise ModelError(
            f"weights file is not a PyTorch archive (torch.save or TorchScript): "
            f"{problem}; it is truncated, corrupt or not a model",
            path=at,
        )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
