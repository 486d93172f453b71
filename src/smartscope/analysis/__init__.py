"""Real-time analysis of every frame: normalise → denoise → segment → measure → track.

``AnalysisPipeline`` runs it on a worker thread behind a bounded queue and
announces a ``FrameResult`` per frame; the steps are also available as pure
functions on numpy arrays. The data contract (``FrameInput``, ``FrameResult``,
``ObjectMeasurement``) and ``AnalysisSettings`` import cheaply; the pipeline
and the image functions (scikit-image, scipy) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartscope.analysis.result import FrameInput, FrameResult, ObjectMeasurement
from smartscope.analysis.settings import AnalysisSettings

if TYPE_CHECKING:
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.measure import ObjectTable, measure_objects
    from smartscope.analysis.models import ModelLoadError
    from smartscope.analysis.normalize import estimate_background, normalize_percentile
    from smartscope.analysis.pipeline import AnalysisPipeline
    from smartscope.analysis.segment import filter_by_area, segment_nuclei
    from smartscope.analysis.track import Tracker, TrackIdCounter

__all__ = [
    "AnalysisPipeline",
    "AnalysisSettings",
    "FrameAnalyser",
    "FrameInput",
    "FrameResult",
    "ModelLoadError",
    "ObjectMeasurement",
    "ObjectTable",
    "TrackIdCounter",
    "Tracker",
    "estimate_background",
    "filter_by_area",
    "measure_objects",
    "normalize_percentile",
    "segment_nuclei",
]

_LAZY = {
    "AnalysisPipeline": "smartscope.analysis.pipeline",
    "FrameAnalyser": "smartscope.analysis.analyser",
    "ModelLoadError": "smartscope.analysis.models",
    "ObjectTable": "smartscope.analysis.measure",
    "measure_objects": "smartscope.analysis.measure",
    "estimate_background": "smartscope.analysis.normalize",
    "normalize_percentile": "smartscope.analysis.normalize",
    "filter_by_area": "smartscope.analysis.segment",
    "segment_nuclei": "smartscope.analysis.segment",
    "TrackIdCounter": "smartscope.analysis.track",
    "Tracker": "smartscope.analysis.track",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smartscope.analysis' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
