"""How the real-time analysis of every frame is configured.

``AnalysisSettings`` is the ``analysis:`` block of a protocol: which segmenter
(classical or a trained model), an optional denoiser, the expected nucleus
size, size limits, the tracker's gates and the pipeline's queue. It is
validated once, when the protocol is loaded, and trusted afterwards.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["AnalysisSettings", "RaySettings"]


class RaySettings(BaseModel):
    """Where ``executor: ray`` runs the analysis: a Ray actor (one process,
    on whichever node of the cluster has the resources asked for)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(
        None,
        description="Ray cluster to join ('ray://host:10001', 'auto'); None: "
        "the one RAY_ADDRESS names, else a local Ray started for the run",
    )
    num_gpus: float = Field(
        0.0,
        ge=0,
        le=64,
        description="GPUs the analysis actor holds (1: run the models on a GPU "
        "node; the actor's device is then cuda)",
    )
    num_cpus: float = Field(1.0, gt=0, le=256, description="CPUs the actor holds")
    timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="longest wait for one frame's result; a frame that takes "
        "longer gets an error result (the run goes on)",
    )


class AnalysisSettings(BaseModel):
    """Settings of the analysis pipeline (normalise → denoise → segment →
    measure → track). Units are in the field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="analyse frames at all")
    segmenter: Literal["classical", "model"] = Field(
        "classical",
        description="'classical': smoothing, global threshold and watershed; "
        "'model': the trained segmenter named by `model`",
    )
    model: str | None = Field(
        None,
        description="segmentation model for smartscope.nn.load_model (a name from "
        "models/ or a path); required when segmenter='model'",
    )
    denoise: str | None = Field(
        None,
        description="denoising model for smartscope.nn.load_model, run before "
        "segmentation; None: no denoising",
    )
    diameter_um: float = Field(
        12.0, gt=0, le=500, description="typical nucleus diameter at the sample, µm"
    )
    min_area_um2: float = Field(
        20.0, ge=0, description="objects smaller than this are discarded, µm²"
    )
    max_area_um2: float = Field(
        2000.0, gt=0, description="objects larger than this are discarded, µm²"
    )
    threshold: Literal["otsu", "li", "triangle"] = Field(
        "otsu", description="global threshold method of the classical segmenter"
    )
    track_max_step_um: float = Field(
        15.0,
        gt=0,
        description="largest distance between an object and the (predicted) "
        "position of a track it may join, µm",
    )
    track_max_gap_frames: int = Field(
        2,
        ge=0,
        le=1000,
        description="frames of a position a track may miss and still be continued",
    )
    track_predict_velocity: bool = Field(
        True,
        description="predict each track's position from its last velocity "
        "before linking",
    )
    threads: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        "auto",
        description="CPU threads of the models (torch intra-op threads); 'auto': "
        "chosen while the run goes from the models' time per frame, tried again "
        "when the machine gets busier or quieter (smartscope.analysis.threads)",
    )
    queue_size: int = Field(
        4,
        ge=1,
        le=10_000,
        description="frames waiting for analysis; when full, the oldest is "
        "dropped from analysis (never from disk)",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="'local': a thread of this process; 'ray': a Ray actor, "
        "possibly on another machine with a GPU (needs the [ray] extra); the "
        "queue, skipping and latency accounting are the same",
    )
    ray: RaySettings = Field(
        default_factory=RaySettings, description="where executor 'ray' runs"
    )
    save_labels: bool = Field(False, description="write label images to the run folder")
    save_denoised: bool = Field(
        False, description="write denoised images to the run folder"
    )

    @field_validator("model", "denoise", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> AnalysisSettings:
        if self.segmenter == "model" and self.model is None:
            raise ValueError(
                "segmenter='model' needs `model`: the name or path of a "
                "segmentation model (or use segmenter='classical')"
            )
        if self.min_area_um2 >= self.max_area_um2:
            raise ValueError(
                f"min_area_um2 ({self.min_area_um2:g}) must be smaller than "
                f"max_area_um2 ({self.max_area_um2:g})"
            )
        typical = math.pi * (self.diameter_um / 2) ** 2
        if not self.min_area_um2 <= typical <= self.max_area_um2:
            raise ValueError(
                f"a nucleus of diameter_um={self.diameter_um:g} has an area of "
                f"{typical:.1f} µm², outside min_area_um2..max_area_um2 "
                f"({self.min_area_um2:g}..{self.max_area_um2:g}); every typical "
                "nucleus would be discarded"
            )
        if self.save_denoised and self.denoise is None:
            raise ValueError(
                "save_denoised=True needs a denoiser: set `denoise` to a model "
                "name or path, or set save_denoised=False"
            )
        return self
