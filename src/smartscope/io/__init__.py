"""The run folder: raw data (OME-Zarr), decision log, measurements, summary."""

from smartscope.io.events_log import EventLog
from smartscope.io.image_store import DerivedImageStore
from smartscope.io.measurements import MeasurementsWriter
from smartscope.io.summary import percentiles

__all__ = ["DerivedImageStore", "EventLog", "MeasurementsWriter", "percentiles"]
