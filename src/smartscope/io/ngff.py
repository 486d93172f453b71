"""OME-NGFF 0.5 metadata of a run's ``data.ome.zarr``, built with yaozarrs'
models (so what is written is checked against the specification as it is
made).

The layout (the bioformats2raw layout, as pymmcore-plus's own writer lays out
a multi-position acquisition)::

    data.ome.zarr/
        zarr.json          ome: {version, bioformats2raw.layout: 3}; smartscope: run
        OME/zarr.json      ome: {version, series: ["0", "1", ...]}
        OME/METADATA.ome.xml   the images as OME-XML (what readers such as
                           napari-ome-zarr list a collection's images from)
        0/                 one image: axes t, c, z, y, x
            zarr.json      ome: {multiscales, omero}; smartscope: what it is
            0/             the array (t, c, z, y, x), one chunk per plane
            labels/        image-labels of this image, same axes and shape
        1/ ...

An image holds one position's (one grid tile's) frames by their time point,
channel and z plane. Denoised frames are an image of their own (``kind:
denoised``, ``source`` the raw image's series); autofocus sweeps are an image
per position too (``kind: autofocus``: t the sweep, z its planes).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AXES",
    "image_attrs",
    "label_attrs",
    "labels_group_attrs",
    "ome_xml",
    "root_attrs",
    "series_attrs",
]

#: the axes of every image, in order
AXES = ("t", "c", "z", "y", "x")

#: display colours for channels, by name (anything else: white)
_COLOURS = {
    "dapi": "0000FF",
    "hoechst": "0000FF",
    "gfp": "00FF00",
    "fitc": "00FF00",
    "rfp": "FF0000",
    "mcherry": "FF0000",
    "cy5": "FF00FF",
}


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def _multiscale(name: str, scale: list[float]) -> Any:
    from yaozarrs import v05

    return v05.Multiscale(
        name=name,
        axes=[
            v05.TimeAxis(name="t", unit="second"),
            v05.ChannelAxis(name="c"),
            v05.SpaceAxis(name="z", unit="micrometer"),
            v05.SpaceAxis(name="y", unit="micrometer"),
            v05.SpaceAxis(name="x", unit="micrometer"),
        ],
        datasets=[
            v05.Dataset(
                path="0",
                coordinateTransformations=[v05.ScaleTransformation(scale=scale)],
            )
        ],
    )


def _scale(interval_s: float, z_step_um: float, pixel_um: float) -> list[float]:
    # a zero scale collapses an axis in viewers: 1 s / 1 µm when there is none
    return [
        float(interval_s) if interval_s > 0 else 1.0,
        1.0,
        float(z_step_um) if z_step_um > 0 else 1.0,
        float(pixel_um) if pixel_um > 0 else 1.0,
        float(pixel_um) if pixel_um > 0 else 1.0,
    ]


def image_attrs(
    name: str,
    *,
    channels: list[str],
    interval_s: float,
    z_step_um: float,
    pixel_um: float,
    dtype_max: float,
    smartscope: dict[str, Any],
    windows: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """An image group's attributes: NGFF ``multiscales`` and ``omero`` (channel
    names, colours and display windows: ``windows`` (start, end) per channel,
    else the dtype's range), and ``smartscope`` (what the image is)."""
    from yaozarrs import v05

    omero = v05.Omero(
        name=name,
        channels=[
            v05.OmeroChannel(
                label=c or f"channel {i}",
                color=_COLOURS.get(c.lower(), "FFFFFF"),
                active=True,
                window=v05.OmeroWindow(
                    start=_window(windows, i, dtype_max)[0],
                    end=_window(windows, i, dtype_max)[1],
                    min=0,
                    max=dtype_max,
                ),
            )
            for i, c in enumerate(channels)
        ],
    )
    image = v05.Image(
        multiscales=[_multiscale(name, _scale(interval_s, z_step_um, pixel_um))],
        omero=omero,
    )
    return {"ome": _dump(image), "smartscope": smartscope}


def _window(
    windows: list[tuple[float, float]] | None, i: int, dtype_max: float
) -> tuple[float, float]:
    """Channel ``i``'s display window (what viewers show as black and white)."""
    if windows and i < len(windows) and windows[i][1] > windows[i][0]:
        return float(windows[i][0]), float(windows[i][1])
    return 0.0, float(dtype_max)


def label_attrs(
    name: str, *, interval_s: float, z_step_um: float, pixel_um: float
) -> dict[str, Any]:
    """A label image's attributes (NGFF ``image-label``; its source is the
    image two levels up)."""
    from yaozarrs import v05

    label = v05.LabelImage(
        multiscales=[_multiscale(name, _scale(interval_s, z_step_um, pixel_um))],
        image_label=v05.ImageLabel(source=v05.LabelSource(image="../../")),
    )
    return {"ome": _dump(label)}


def labels_group_attrs(names: list[str]) -> dict[str, Any]:
    """The ``labels`` group of an image: the names of its label images."""
    from yaozarrs import v05

    return {"ome": _dump(v05.LabelsGroup(labels=names))}


def root_attrs(smartscope: dict[str, Any]) -> dict[str, Any]:
    """The root group: bioformats2raw layout, and the run's own metadata."""
    from yaozarrs import v05

    return {
        "ome": _dump(v05.Bf2Raw.model_validate({"bioformats2raw.layout": 3})),
        "smartscope": smartscope,
    }


def series_attrs(series: list[str]) -> dict[str, Any]:
    """The ``OME`` group: the images, in the order they were created."""
    from yaozarrs import v05

    return {"ome": _dump(v05.Series(series=series))}


#: numpy dtype names that OME-XML spells otherwise
_OME_TYPES = {"float32": "float", "float64": "double"}
_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def ome_xml(images: list[dict[str, Any]]) -> str:
    """OME-XML naming the images (``Image:<series>``) with their sizes,
    channels and scales: the bioformats2raw layout's ``OME/METADATA.ome.xml``.

    Each of ``images``: series, name, dtype, shape (t, c, z, y, x), channels,
    pixel_um, z_step_um, interval_s. Written with the standard library (it is
    rewritten while a run acquires; ome-types, which validates it in the
    tests, takes seconds to import)."""
    import xml.etree.ElementTree as ET

    ET.register_namespace("", _OME_NS)
    root = ET.Element(f"{{{_OME_NS}}}OME", {"Creator": "smartscope"})
    for im in images:
        t, c, z, y, x = (int(n) for n in im["shape"])
        s = str(im["series"])
        image = ET.SubElement(
            root, f"{{{_OME_NS}}}Image", {"ID": f"Image:{s}", "Name": str(im["name"])}
        )
        attrs = {
            "ID": f"Pixels:{s}",
            "DimensionOrder": "XYZCT",
            "Type": _OME_TYPES.get(str(im["dtype"]), str(im["dtype"])),
            "SizeX": str(x),
            "SizeY": str(y),
            "SizeZ": str(max(z, 1)),
            "SizeC": str(max(c, 1)),
            "SizeT": str(max(t, 1)),
        }
        for key, value in (
            ("PhysicalSizeX", im["pixel_um"]),
            ("PhysicalSizeY", im["pixel_um"]),
            ("PhysicalSizeZ", im["z_step_um"]),
            ("TimeIncrement", im["interval_s"]),
        ):
            if value:
                attrs[key] = repr(float(value))
        pixels = ET.SubElement(image, f"{{{_OME_NS}}}Pixels", attrs)
        names = list(im["channels"]) + [""] * max(0, c - len(im["channels"]))
        for i, name in enumerate(names[: max(c, 1)]):
            ch = {"ID": f"Channel:{s}:{i}", "SamplesPerPixel": "1"}
            if name:
                ch["Name"] = str(name)
            ET.SubElement(pixels, f"{{{_OME_NS}}}Channel", ch)
        ET.SubElement(pixels, f"{{{_OME_NS}}}MetadataOnly")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
