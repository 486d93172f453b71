"""The run folder: images (OME-Zarr), decision log, measurements, summary."""

from smartscope.io.events_log import EventLog
from smartscope.io.images import RunImages, Where
from smartscope.io.measurements import MeasurementsWriter
from smartscope.io.summary import percentiles

__all__ = ["EventLog", "MeasurementsWriter", "RunImages", "Where", "percentiles"]
