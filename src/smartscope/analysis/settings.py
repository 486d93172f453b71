"""How the real-time analysis of every frame is configured.

``AnalysisSettings`` is the ``analysis:`` block of a protocol: which segmenter
(classical or a trained model), an optional denoiser, the expected nucleus
size, size limits, the tracker's gates and the pipeline's queue. It is
validated once, when the protocol is loaded, and trusted afterwards.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = ["AdaptSettings", "AnalysisSettings", "RaySettings"]

#: the most model threads or frames per batch a protocol may ask for
_MAX_COUNT = 256


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


class AdaptSettings(BaseModel):
    """Fine-tuning the Noise2Void denoiser on the run's own frames
    (``analysis.denoise: {model: denoise-n2v, adapt: true}``).

    A separate low-priority process trains a copy of the denoiser on the
    latest raw frames and sends back weight versions, which the analysis puts
    in place between two frames (:mod:`smartscope.nn.adapt`). Units are in the
    field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps_per_version: int = Field(
        50, ge=1, le=100_000, description="training steps behind each weight version"
    )
    batch_size: int = Field(8, ge=1, le=256)
    patch_px: int = Field(64, ge=16, le=512)
    lr: float = Field(
        5e-4, gt=0, le=0.1, description="AdamW learning rate (after a warm-up)"
    )
    mask_fraction: float = Field(
        0.05, gt=0, le=0.25, description="blind-spot pixels per patch"
    )
    frames_kept: int = Field(
        16, ge=1, le=10_000, description="the latest frames trained on"
    )
    pacing: Literal["auto", "paced", "background"] = Field(
        "auto",
        description="'background': train continuously and take each version as "
        "it comes (the analysis never waits); 'paced': a version every "
        "`frames_per_version` frames, which the analysis waits for one period "
        "later (a seeded run adapts the same whatever the host's speed); "
        "'auto': paced in the simulator's virtual time, else background",
    )
    frames_per_version: int = Field(
        4, ge=1, le=10_000, description="paced: frames between two versions"
    )
    max_versions: int | None = Field(
        None, ge=1, description="stop adapting after this many versions; None: never"
    )
    threads: int = Field(1, ge=1, le=64, description="CPU threads of the training")
    nice: int = Field(
        19, ge=0, le=19, description="the training process's niceness (19: lowest)"
    )
    seed: int = 0
    version_timeout_s: float = Field(
        600.0,
        gt=0,
        description="paced: longest wait for a version; past it the run goes on "
        "in the background pacing",
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
        "segmentation; None: no denoising. Also written as a mapping "
        "{model: NAME, adapt: true | {AdaptSettings}}",
    )
    denoise_adapt: AdaptSettings | None = Field(
        None,
        description="fine-tune the (Noise2Void) denoiser on the run's frames; "
        "None: the weights stay as loaded (see AdaptSettings)",
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
    model_min_area_um2: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="smallest object the segmentation model's own "
        "post-processing keeps, µm² (also at the image border); None: the "
        "model card's fragment limits (nuclei-seg: about 0.4 of a typical "
        "nucleus's area). Lower it to keep micronuclei or apoptotic bodies "
        "(fragments of nuclei are then kept too); min_area_um2 still applies "
        "after. Only with segmenter='model'",
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
    threads: Annotated[int, Field(ge=1, le=_MAX_COUNT)] | Literal["auto"] = Field(
        "auto",
        description="CPU threads of the models (torch intra-op threads); 'auto': "
        "chosen while the run goes from the models' time per frame, tried again "
        "when the machine gets busier or quieter (smartscope.analysis.threads)",
    )
    precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto",
        description="number format of the models' networks; 'auto': bfloat16 "
        "on a GPU, and on the CPU a model's int8 copy where its card has one "
        "(ONNX Runtime; made and checked by smartscope.nn.quantize), else float32",
    )
    stages: Literal["auto", 1, 2] = Field(
        "auto",
        description="1: each frame denoised then segmented on one worker "
        "thread; 2: a pipeline of two threads, the denoiser on the next frame "
        "while the segmenter, measurement and tracking finish this one (one "
        "model thread each; needs a denoiser). 'auto': 2 where that was "
        "measured faster (a denoiser, models on the CPU of a 2- or 3-core "
        "machine, the local executor, threads 'auto' or 1, batch_frames "
        "'auto' or 1), else 1",
    )
    batch_frames: Annotated[int, Field(ge=1, le=_MAX_COUNT)] | Literal["auto"] = Field(
        "auto",
        description="most frames the analysis takes together when several "
        "are waiting (e.g. the frames of several stage positions): frames of "
        "one size and pixel size go to the models as one batch, one copy to "
        "the device and one network call; measurement and tracking stay per "
        "frame, in order. 'auto': up to 8 where the models run on a GPU (and "
        "take batches; not with denoise.adapt), 1 (one at a time) on the "
        "CPU, where batches were measured slower",
    )
    cuda_graphs: bool = Field(
        True,
        description="where the models run on a GPU: record each network's "
        "kernels once per input shape (a CUDA graph) and replay them, one "
        "launch per network call instead of one per kernel. The camera's "
        "frame size is recorded at every batch size in the warm-up before "
        "the run's first frame, another size at its second frame. For this "
        "project's networks (an imported bioimage.io network and a denoiser "
        "that adapts launch their kernels one by one). A recording that "
        "gives other values than the network turns them off for that model, "
        "one that fails midway for every model of the process, with a "
        "warning. false: launch the kernels one by one. Ignored on the CPU",
    )
    heap: Literal["keep", "system"] = Field(
        "keep",
        description="'keep': once models are loaded, the C allocator keeps "
        "the memory each frame frees for the next one instead of handing "
        "it back and faulting it in again (glibc; for the whole process: "
        "2048² frames 9-15% faster here, resident memory at the "
        "analysis' peak, given back every 250 frames and when the run "
        "ends; smartscope.heap); 'system': the allocator as it is",
    )
    queue_size: int = Field(
        4,
        ge=1,
        le=10_000,
        description="frames waiting for analysis; when full, the oldest is "
        "dropped from analysis (never from disk)",
    )
    max_wait_ms: float | None = Field(
        None,
        gt=0,
        le=3_600_000,
        description="realtime and hardware runs: a frame that has waited "
        "longer than this for analysis (since the camera handed it over) is "
        "dropped from analysis (never from disk) when a newer frame of its "
        "position and channel waits behind it, so that an analysis that falls "
        "behind works on the newest frames and the reactions act on what the "
        "sample looks like now; the newest frame of each position and channel "
        "is always analysed. None: frames wait however long "
        "(queue_size bounds how many). Virtual time ignores it: the analysis "
        "paces the clock there and no frame is late",
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

    @model_validator(mode="before")
    @classmethod
    def _denoise_mapping(cls, data: Any) -> Any:
        """``denoise: {model: NAME, adapt: true | {...}}`` → ``denoise: NAME``
        and ``denoise_adapt``."""
        if not isinstance(data, dict) or not isinstance(data.get("denoise"), dict):
            return data
        spec = dict(data["denoise"])
        unknown = sorted(set(spec) - {"model", "adapt"})
        if unknown:
            raise ValueError(
                f"denoise: unknown field(s) {unknown}; a denoise mapping holds "
                "`model` (a model name or path) and `adapt` (true, false or a "
                "mapping of AdaptSettings)"
            )
        if "model" not in spec:
            raise ValueError(
                "denoise: a mapping needs `model`: the name or path of a denoiser"
            )
        if "denoise_adapt" in data:
            raise ValueError(
                "give the adaptation once: as denoise.adapt or as denoise_adapt"
            )
        adapt = spec.get("adapt", False)
        if adapt is True:
            adapt = {}
        elif adapt is False or adapt is None:
            adapt = None
        elif not isinstance(adapt, dict):
            raise ValueError(
                f"denoise.adapt must be true, false or a mapping, got {adapt!r}"
            )
        return {**data, "denoise": spec["model"], "denoise_adapt": adapt}

    @field_validator("threads", "batch_frames", mode="before")
    @classmethod
    def _count_or_auto(cls, value: Any, info: ValidationInfo) -> Any:
        """One message for a count that may also be 'auto' (else pydantic
        reports each branch of the union, and ``true`` passes as 1)."""
        if value == "auto" and isinstance(value, str):
            return value
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or not 1 <= int(value) <= _MAX_COUNT:
            raise ValueError(
                f"expected a whole number from 1 to {_MAX_COUNT} or 'auto' "
                f"for {info.field_name}"
            )
        return int(value)

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
        if self.model_min_area_um2 is not None and self.segmenter != "model":
            raise ValueError(
                "model_min_area_um2 sets the segmentation model's own fragment "
                "limit: it needs segmenter='model' (the classical segmenter "
                "uses min_area_um2)"
            )
        if (
            self.model_min_area_um2 is not None
            and self.model_min_area_um2 >= self.max_area_um2
        ):
            raise ValueError(
                f"model_min_area_um2 ({self.model_min_area_um2:g}) must be smaller "
                f"than max_area_um2 ({self.max_area_um2:g}): nothing the model "
                "keeps could pass the area filter"
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
        if self.denoise_adapt is not None:
            if self.denoise is None:
                raise ValueError("denoise_adapt needs a denoiser: set `denoise`")
            if self.executor == "ray":
                raise ValueError(
                    "denoise.adapt runs beside the local analysis; it is not "
                    "available with executor='ray'"
                )
        if self.save_denoised and self.denoise is None:
            raise ValueError(
                "save_denoised=True needs a denoiser: set `denoise` to a model "
                "name or path, or set save_denoised=False"
            )
        if self.batch_frames != "auto" and self.batch_frames > 1:
            if self.executor == "ray":
                raise ValueError(
                    f"batch_frames={self.batch_frames} is for the local "
                    "analysis, not executor='ray': use batch_frames 1 or 'auto'"
                )
            if self.stages == 2:
                raise ValueError(
                    f"batch_frames={self.batch_frames} and stages=2 do not go "
                    "together (the two stages pass one frame at a time): use "
                    "batch_frames 1 or 'auto', or stages 1"
                )
            if self.denoise_adapt is not None:
                raise ValueError(
                    f"batch_frames={self.batch_frames} and denoise.adapt do not "
                    "go together (a new version of the weights would wait for "
                    "a batch to end): use batch_frames 1 or 'auto'"
                )
        if self.stages == 2:
            if self.denoise is None:
                raise ValueError(
                    "stages=2 runs the denoiser beside the rest of the analysis; "
                    "set `denoise`, or use stages=1"
                )
            if self.executor == "ray":
                raise ValueError(
                    "stages=2 is for the local analysis, not executor='ray'"
                )
            if self.threads not in ("auto", 1):
                raise ValueError(
                    f"stages=2 gives each stage one model thread; threads="
                    f"{self.threads} asks for more: use threads 'auto' or 1, "
                    "or stages=1"
                )
        return self
