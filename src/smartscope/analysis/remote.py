"""The analysis in a Ray actor: ``analysis: {executor: ray}``.

The pipeline (:class:`~smartscope.analysis.pipeline.AnalysisPipeline`) keeps
its queue, its worker thread, its skipping and its counters; only the work of
one frame (normalise → denoise → segment → measure → track) moves to a
:class:`FrameAnalyser` living in a Ray actor, which holds the models and the
tracks and may sit on another machine with a GPU (``ray.num_gpus``). The
worker waits for each frame's result, so there is at most one frame in
flight: back-pressure is the queue's, as with the local executor.

Times: ``t_result`` is stamped here when the result arrives (the actor's
clock is another machine's), so frame → result latency includes the round
trip; ``extra`` keeps the actor's own ``analysis_ms`` and adds
``remote_ms`` (the round trip as seen from here).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

from smartscope.analysis.analyser import FrameAnalyser
from smartscope.analysis.models import ModelLoadError
from smartscope.analysis.result import FrameInput, FrameResult
from smartscope.analysis.settings import AnalysisSettings

__all__ = ["RemoteAnalyser"]

logger = logging.getLogger("smartscope.analysis.pipeline")


class _AnalyserActor:
    """What runs inside the Ray actor: a FrameAnalyser and a way to say where."""

    def __init__(self, settings: AnalysisSettings, device: str) -> None:
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = device
        self._analyser = FrameAnalyser(settings, device=device)

    def load_models(self) -> tuple[str, str, str] | None:
        """None when the models loaded, else the ModelLoadError's (message,
        model, role)."""
        try:
            self._analyser.load_models()
        except ModelLoadError as e:
            return str(e), e.model, e.role
        return None

    def analyse(
        self, frame: FrameInput, images_kept: frozenset[str] | None = None
    ) -> FrameResult:
        if images_kept is not None:  # not sent back either
            self._analyser.images_kept = images_kept
        result = self._analyser.analyse(frame)
        # the caller has the frame (and its image): do not send it back
        return dataclasses.replace(result, frame=None)  # type: ignore[arg-type]

    def reset_tracks(self) -> None:
        self._analyser.reset_tracks()

    def where(self) -> dict[str, Any]:
        import os
        import socket

        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self._device,
        }


class RemoteAnalyser:
    """A FrameAnalyser in a Ray actor, used in its place by the pipeline."""

    def __init__(self, settings: AnalysisSettings, *, device: str = "auto") -> None:
        self._settings = settings
        self._device = device
        self._actor: Any = None
        self._started_ray = False
        #: where the actor runs (host, pid, device), once started
        self.where: dict[str, Any] = {}

    def load_models(self) -> None:
        """Start (or join) Ray, start the actor and load the models in it.

        Raises
        ------
        ModelLoadError
            Ray missing or unreachable, the actor not placeable, or a model
            that does not load there.
        """
        if self._actor is not None:
            return
        try:
            import ray
        except ImportError as e:
            raise ModelLoadError(
                "analysis.executor 'ray' needs Ray: pip install 'smartscope[ray]'",
                **self._named(),
            ) from e
        cfg = self._settings.ray
        try:
            if not ray.is_initialized():
                kwargs: dict[str, Any] = {
                    "include_dashboard": False,
                    "log_to_driver": False,
                }
                if cfg.address is not None:
                    kwargs["address"] = cfg.address
                ray.init(**kwargs)
                self._started_ray = True
            actor_cls = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)(
                _AnalyserActor
            )
            actor = actor_cls.remote(self._settings, self._device)
            failed = ray.get(
                actor.load_models.remote(), timeout=max(cfg.timeout_s, 120)
            )
            if failed is not None:
                ray.kill(actor)
                message, model, role = failed
                raise ModelLoadError(
                    f"{message} (in the Ray analysis actor)", model=model, role=role
                )
            self.where = ray.get(actor.where.remote(), timeout=cfg.timeout_s)
        except ModelLoadError:
            self.close()
            raise
        except Exception as e:
            self.close()
            where = cfg.address or "a local Ray"
            raise ModelLoadError(
                f"analysis.executor 'ray': could not start the analysis actor on "
                f"{where} (num_gpus {cfg.num_gpus:g}, num_cpus {cfg.num_cpus:g}): "
                f"{type(e).__name__}: {e}",
                **self._named(),
            ) from e
        self._actor = actor
        logger.info("analysis runs in a Ray actor: %s", str(self.where))

    def _named(self) -> dict[str, Any]:
        """The model a failure to start the actor is reported against."""
        s = self._settings
        if s.segmenter == "model" and s.model:
            return {"model": s.model, "role": "segmenter"}
        if s.denoise:
            return {"model": s.denoise, "role": "denoiser"}
        return {"model": "classical", "role": "segmenter"}

    def analyse(
        self, frame: FrameInput, images_kept: frozenset[str] | None = None
    ) -> FrameResult:
        """The actor's analysis of ``frame``, or an error result (the run goes
        on) when the actor fails or takes longer than ``ray.timeout_s``.
        ``images_kept``: the images the result carries back
        (``FrameAnalyser.images_kept``; None: the actor's, both)."""
        import ray

        t0 = time.perf_counter()
        try:
            if self._actor is None:
                self.load_models()
            result = ray.get(
                self._actor.analyse.remote(frame, images_kept),
                timeout=self._settings.ray.timeout_s,
            )
        except Exception as e:
            message = f"remote analysis: {type(e).__name__}: {e}"
            logger.warning(
                "analysis of frame %d failed: %s", frame.frame_index, message
            )
            return FrameResult(
                frame=frame,
                objects=(),
                labels=None,
                denoised=None,
                background=math.nan,
                t_result=time.perf_counter(),
                error=message[:2000],
            )
        t1 = time.perf_counter()
        return dataclasses.replace(
            result,
            frame=frame,
            t_result=t1,
            extra={**result.extra, "remote_ms": (t1 - t0) * 1000.0},
        )

    def reset_tracks(self) -> None:
        if self._actor is not None:
            import ray

            ray.get(self._actor.reset_tracks.remote())

    def close(self) -> None:
        """End the actor (and the local Ray this analyser started)."""
        try:
            import ray
        except ImportError:
            return
        if self._actor is not None:
            try:
                ray.kill(self._actor)
            except Exception:
                logger.exception("ending the Ray analysis actor failed")
            self._actor = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
