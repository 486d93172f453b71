"""Training loops for CARE, Noise2Void and nuclei segmentation.

One :class:`TrainConfig` (a frozen pydantic model) describes a run: method,
network size, steps, batch, seed, and where the data come from (the simulator
or a folder of TIFFs). :func:`train` builds the data, runs :func:`fit`
(AdamW, one-cycle learning rate, a fixed validation batch, the best weights
kept, checkpoints), scores the result on whole validation frames against the
classical baselines, and returns a :class:`TrainResult` holding the model,
its loss history and the per-image scores that the model card and the QC
report are made from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from smartscope.nn.card import ModelCard, Normalization, Postprocess
from smartscope.nn.datasets import (
    MixedSampler,
    N2VSampler,
    PairSampler,
    SegAugment,
    SegmentationSampler,
    offset_free,
)
from smartscope.nn.model import Model, build_model
from smartscope.nn.simdata import SimDataSpec, simulate_frames
from smartscope.nn.unet import UNet, UNetConfig, freeze_norm_statistics

__all__ = [
    "DENOISE_SPEC",
    "SEGMENT_SPEC",
    "SEGMENT_VAL_SPEC",
    "TrainConfig",
    "TrainResult",
    "fit",
    "train",
]

Method = Literal["care", "n2v", "segment"]

#: low-dose acquisitions the denoisers are trained and validated on
DENOISE_SPEC = SimDataSpec(
    size_px=256,
    objectives=("10x", "20x"),
    power_mw=(0.2, 2.0),
    exposure_ms=(5.0, 30.0),
    density_per_mm2=(300.0, 2000.0),
    defocus_um=(0.0, 2.0),
    min_nuclei=3,
)
#: wide spread of samples for segmentation training (noise is added in augmentation)
SEGMENT_SPEC = SimDataSpec(
    size_px=512,
    objectives=("4x", "10x", "20x"),
    power_mw=(2.0, 30.0),
    exposure_ms=(10.0, 100.0),
    density_per_mm2=(300.0, 4000.0),
    radius_um_mean=(3.5, 9.0),
    defocus_um=(0.0, 1.5),
    elongation_sd=(0.05, 0.4),
)
#: segmentation validation: native scale, real simulator noise, 10x and 20x
SEGMENT_VAL_SPEC = SimDataSpec(
    size_px=512,
    objectives=("10x", "20x"),
    power_mw=(2.0, 20.0),
    exposure_ms=(10.0, 100.0),
    density_per_mm2=(300.0, 3000.0),
    radius_um_mean=(4.0, 7.5),
    defocus_um=(0.0, 1.5),
)


def warmup_fraction(steps: int) -> float:
    """The share of ``steps`` the one-cycle schedule warms up for: a tenth,
    but at least 2.5 steps and at most 40% (torch's OneCycleLR divides by
    zero when the warm-up or the decay is exactly one step: 10 steps at 10%)."""
    return min(0.4, max(0.1, 2.5 / steps))


class TrainConfig(BaseModel):
    """One training run. Units are in the field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    steps: int = Field(2000, ge=1, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=512)
    patch_px: int = Field(128, ge=16, le=1024)
    lr: float = Field(2e-3, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    depth: int = Field(3, ge=1, le=5)
    base_channels: int = Field(16, ge=4, le=128)
    pixel_unshuffle: Literal[1, 2] = 2
    threads: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        2,
        description="torch CPU threads; 'auto': chosen from the steps' own times "
        "and tried again when the machine gets busier (ThreadTuner), since two "
        "threads on two busy cores run several times slower than one",
    )
    workers: int = Field(1, ge=0, le=16, description="data-loading processes")
    val_every: int = Field(250, ge=1)
    val_patches: int = Field(64, ge=1)
    data_dir: Path | None = Field(
        None, description="folder of TIFFs; None: the simulator"
    )
    train_fields: int = Field(160, ge=1, description="simulated fields for training")
    val_fields: int = Field(16, ge=1, description="simulated fields for validation")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="of a TIFF folder")
    n2v_mask_fraction: float = Field(0.05, gt=0, le=0.25)
    init: str | None = Field(
        None,
        description="model (name or path) whose weights training starts from; "
        "its card's U-Net replaces depth and base_channels; None: random",
    )
    train_diameter_px: float = Field(20.0, gt=0)
    freeze_norm: bool | None = Field(
        None,
        description="keep the batch norms' running statistics as loaded while "
        "the weights learn; None: yes for Noise2Void starting from a model "
        "(--init), where it was worth 0.2-0.8 dB on real images, no otherwise",
    )

    sim_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="segmentation on the user's images (data_dir): the share of "
        "each batch's crops drawn instead from train_fields simulated fields, as "
        "without data_dir; 0: the user's images only",
    )

    @model_validator(mode="after")
    def _sim_fraction_needs_user_images(self) -> TrainConfig:
        if self.sim_fraction > 0 and (
            self.method != "segment" or self.data_dir is None
        ):
            raise ValueError(
                f"sim_fraction={self.sim_fraction} mixes simulated crops into "
                "training on the user's images: it needs method 'segment' and "
                "data_dir (--data); without --data every crop is simulated"
            )
        return self

    @property
    def norm_frozen(self) -> bool:
        """Whether :func:`fit` keeps the batch norms' statistics as loaded."""
        if self.freeze_norm is not None:
            return self.freeze_norm
        return self.method == "n2v" and self.init is not None


@dataclass
class TrainResult:
    """What a training run produced."""

    config: TrainConfig
    model: Model
    network: UNet
    history: list[dict[str, float]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# ------------------------------------------------------------------ losses


def _loss_fn(method: Method) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    # Restoration losses average the log of each patch's MSE, i.e. maximise the
    # mean PSNR: a plain MSE lets the noisiest patches (largest errors in
    # normalised units) drown out the cleaner ones.
    if method == "care":

        def care_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            mse = ((out - y) ** 2).mean(dim=(1, 2, 3))
            return torch.log10(mse + 1e-6).mean() * 10.0

        return care_loss
    if method == "n2v":

        def n2v_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target, mask = y[:, :1], y[:, 1:]
            se = ((out - target) ** 2 * mask).sum(dim=(1, 2, 3))
            mse = se / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)
            return torch.log10(mse + 1e-6).mean() * 10.0

        return n2v_loss

    def seg_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(out[:, :1], y[:, :1]) + 2.0 * bce(out[:, 1:], y[:, 1:])

    return seg_loss


# ---------------------------------------------------------------- the loop


class _Stream(torch.utils.data.IterableDataset):
    """Endless batches from a sampler, seeded per worker."""

    def __init__(self, sampler: Any, batch_size: int, seed: int) -> None:
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def __iter__(self):  # type: ignore[override]
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id, 0xB47C])
        while True:
            x, y = self.sampler.batch(self.batch_size, rng)
            yield torch.from_numpy(x), torch.from_numpy(y)


def fit(
    network: nn.Module,
    sampler: Any,
    config: TrainConfig,
    *,
    val_batch: tuple[np.ndarray, np.ndarray],
    checkpoint_dir: Path | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``network`` in place on batches from ``sampler``.

    The weights with the lowest validation loss are loaded back at the end.

    Returns
    -------
    history : one dict per validation (step, train_loss, val_loss, lr, seconds)
    """
    tuner = _thread_tuner(config)
    threads = tuner.threads() if tuner is not None else int(config.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    loss_fn = _loss_fn(config.method)
    opt = torch.optim.AdamW(
        network.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=config.lr,
        total_steps=config.steps,
        pct_start=warmup_fraction(config.steps),
    )
    loader = torch.utils.data.DataLoader(
        _Stream(sampler, config.batch_size, config.seed),
        batch_size=None,
        num_workers=config.workers,
        prefetch_factor=4 if config.workers else None,
        persistent_workers=False,
    )
    vx, vy = (torch.from_numpy(a) for a in val_batch)
    history: list[dict[str, float]] = []
    best = (float("inf"), None)
    running, n_run = 0.0, 0
    t0 = time.perf_counter()
    it = iter(loader)
    for step in range(1, config.steps + 1):
        if tuner is not None and tuner.threads() != threads:
            threads = tuner.threads()
            torch.set_num_threads(threads)
        network.train()
        if config.norm_frozen:
            freeze_norm_statistics(network)
        x, y = next(it)
        t_step = time.perf_counter()
        loss = loss_fn(network(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if tuner is not None:
            tuner.record(threads, (time.perf_counter() - t_step) * 1000.0)
        running += float(loss.detach())
        n_run += 1
        if step % config.val_every == 0 or step == config.steps:
            network.eval()
            with torch.inference_mode():
                val = float(
                    np.mean(
                        [
                            float(loss_fn(network(vx[i : i + 16]), vy[i : i + 16]))
                            for i in range(0, len(vx), 16)
                        ]
                    )
                )
            rec = {
                "threads": threads,
                "step": step,
                "train_loss": running / n_run,
                "val_loss": val,
                "lr": float(sched.get_last_lr()[0]),
                "seconds": time.perf_counter() - t0,
            }
            history.append(rec)
            running, n_run = 0.0, 0
            if val < best[0]:
                best = (
                    val,
                    {k: v.detach().clone() for k, v in network.state_dict().items()},
                )
            if checkpoint_dir is not None:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "step": step,
                        "model": network.state_dict(),
                        "optimizer": opt.state_dict(),
                        "history": history,
                    },
                    checkpoint_dir / "last.pt",
                )
            if progress is not None:
                progress(step, rec)
        elif progress is not None and step % 10 == 0:
            progress(step, {})
    del it, loader
    if best[1] is not None:
        network.load_state_dict(best[1])
    network.eval()
    return history


def _thread_tuner(config: TrainConfig) -> Any:
    """A ThreadTuner for ``threads: auto`` (None for a fixed count)."""
    if config.threads != "auto":
        return None
    from smartscope.analysis.threads import ThreadTuner, thread_candidates

    return ThreadTuner(thread_candidates(), probe_every=100)


# ------------------------------------------------------------------ data


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    from smartscope.nn.errors import ModelError

    try:
        a = tifffile.imread(path)
    except Exception as e:
        raise ModelError(f"cannot read training image: {e}", path=path) from e
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ModelError(f"expected a 2D image, got shape {a.shape}", path=path)
    return a


def _folder_pairs(
    folder: Path, sub_a: str, sub_b: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Files with the same name in ``folder/sub_a`` and ``folder/sub_b``."""
    from smartscope.nn.errors import ModelError

    da, db = folder / sub_a, folder / sub_b
    if not da.is_dir() or not db.is_dir():
        raise ModelError(
            f"expected sub-folders {sub_a!r} and {sub_b!r} holding TIFFs with matching "
            "names",
            path=folder,
        )
    out = []
    for pa in _tiffs(da):
        pb = db / pa.name
        if not pb.is_file():
            raise ModelError(f"no matching file in {db}", path=pa)
        a, b = _read_tiff(pa), _read_tiff(pb)
        if a.shape != b.shape:
            raise ModelError(f"shape {a.shape} differs from {pb}'s {b.shape}", path=pa)
        out.append((a, b))
    if not out:
        raise ModelError(f"no .tif files in {da}", path=folder)
    return out


def _split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(items))
    n_val = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
    val = [items[i] for i in idx[:n_val]]
    train = [items[i] for i in idx[n_val:]] or val
    return train, val or train


def _data(config: TrainConfig) -> tuple[list, list, str, str | None]:
    """(train items, validation items, description, what was held out for
    validation when the split is not by whole files) for the method.

    CARE: (noisy, clean) pairs; N2V: (noisy, clean or None) pairs (only noisy is
    trained on); segment: (image, labels) for training and (noisy image,
    labels) for validation.
    """
    m, seed = config.method, config.seed
    if config.data_dir is not None:
        folder = Path(config.data_dir)
        if m == "care":
            pairs = _folder_pairs(folder, "low", "high")
            desc = f"user TIFF pairs from {folder} (low/ and high/)"
        elif m == "n2v":
            from smartscope.nn.user_images import (
                read_noisy_images,
                split_for_validation,
            )

            images, desc = read_noisy_images(folder)
            tr, va, held = split_for_validation(images, config.val_fraction, seed)
            pairs_tr = [(a, None) for a in tr]
            return pairs_tr, [(a, None) for a in va], f"{desc} ({held})", held
        else:
            pairs = _folder_pairs(folder, "images", "masks")
            desc = f"user image/mask TIFFs from {folder} (images/ and masks/)"
        train, val = _split(pairs, config.val_fraction, seed)
        return train, val, desc, None
    if m in ("care", "n2v"):
        tr = simulate_frames(config.train_fields, DENOISE_SPEC, seed=seed + 1)
        va = simulate_frames(config.val_fields, DENOISE_SPEC, seed=seed + 100_001)
        desc = (
            f"{config.train_fields} simulated low-dose fields (smartscope.nn.train."
            f"DENOISE_SPEC: {_spec_text(DENOISE_SPEC)}), "
            + (
                "noisy snap vs noise-free expected_adu"
                if m == "care"
                else "noisy snaps only (no clean targets used)"
            )
        )
        return (
            [(f.image, f.clean) for f in tr],
            [(f.image, f.clean) for f in va],
            desc,
            None,
        )
    return _simulated_segment_data(config)


def _simulated_segment_data(config: TrainConfig) -> tuple[list, list, str, None]:
    """Simulated segmentation fields: noise-free (image, labels) for training
    (noise is drawn by the sampler), noisy (image, labels) for validation."""
    seed = config.seed
    tr = simulate_frames(config.train_fields, SEGMENT_SPEC, seed=seed + 1)
    va = simulate_frames(config.val_fields, SEGMENT_VAL_SPEC, seed=seed + 100_001)
    desc = (
        f"{config.train_fields} simulated fields (smartscope.nn.train.SEGMENT_SPEC: "
        f"{_spec_text(SEGMENT_SPEC)}); noise-free images rescaled to nucleus diameters "
        "8-48 px with rotation, shear, elastic deformation, per-nucleus brightness, "
        "texture, blur, background gradients/haze, gamma, Poisson+Gaussian noise at "
        "10-5000 photons peak and 8/12-bit quantisation; 30% of the crops instead drawn "
        "as packed nuclei (augment.packed_nuclei: flat contacts, dim seams)"
    )
    return (
        [(f.clean - f.offset_adu, f.labels) for f in tr],
        [(f.image, f.labels) for f in va],
        desc,
        None,
    )


def _spec_text(spec: SimDataSpec) -> str:
    d = spec.model_dump()
    keys = (
        "min_nuclei",
        "size_px",
        "objectives",
        "channels",
        "power_mw",
        "exposure_ms",
        "density_per_mm2",
        "radius_um_mean",
        "defocus_um",
    )
    return ", ".join(f"{k}={d[k]}" for k in keys)


def _sampler(config: TrainConfig, items: Sequence, *, real: bool) -> Any:
    if config.method == "care":
        return PairSampler(
            items, patch_px=config.patch_px, noise_jitter=0.02, same_units=not real
        )
    if config.method == "n2v":
        return N2VSampler(
            [a for a, _ in items],
            patch_px=config.patch_px,
            mask_fraction=config.n2v_mask_fraction,
        )
    # the drawn packed-nuclei crops are noise-free: only for simulated training
    aug = SegAugment(synthetic_noise=not real, p_packed=0.0 if real else 0.3)
    if real:
        # the augmentation scales brightness per nucleus and bends it with a
        # gamma: a camera offset under the signal would be scaled with it
        items = [(offset_free(img), lab) for img, lab in items]
    return SegmentationSampler(items, patch_px=config.patch_px, aug=aug)


def _val_sampler(config: TrainConfig, val_items: Sequence) -> Any:
    if config.method == "segment":
        # validation crops keep the frames' own noise and scale (no synthetic noise)
        return SegmentationSampler(
            val_items,
            patch_px=config.patch_px,
            aug=SegAugment(
                synthetic_noise=False,
                diameter_px=(12.0, 30.0),
                p_8bit=0.0,
                blur_px=(0.0, 0.0),
                haze=(0.0, 0.0),
                gradient=(0.0, 0.0),
                background=(0.0, 0.0),
                gamma=(1.0, 1.0),
                elastic_px=0.0,
                cell_brightness_sd=(0.0, 0.0),
                texture=(0.0, 0.0),
                p_packed=0.0,
            ),
        )
    return _sampler(config, val_items, real=config.data_dir is not None)


# ------------------------------------------------------------------- train


def _init_weights(
    config: TrainConfig, unet: UNetConfig
) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    """The U-Net of ``config.init``'s card (this run's output heads and
    residuals must match) and its weights."""
    from smartscope.nn.errors import ModelError
    from smartscope.nn.model import Model, load_model

    start = load_model(config.init, device="cpu")
    if not isinstance(start, Model) or start.source_state is None:
        raise ModelError(
            f"--init {config.init!r}: not a smartscope U-Net model with PyTorch "
            "weights to start from"
        )
    got = start.card.unet
    fixed = ("in_channels", "out_channels", "residual", "blind_residual")
    if any(getattr(got, k) != getattr(unet, k) for k in fixed):
        raise ModelError(
            f"--init {config.init!r} is a {start.card.method!r} {start.card.kind} "
            f"model; a {config.method} run can start only from a {config.method} "
            "model (e.g. --init denoise-n2v for n2v, or --init none)"
        )
    return got, start.source_state


def _card(config: TrainConfig, unet: UNetConfig, desc: str, command: str) -> ModelCard:
    method_name = {"care": "care", "n2v": "n2v", "segment": "distance-watershed"}
    return ModelCard(
        kind="segment" if config.method == "segment" else "denoise",
        method=method_name[config.method],
        unet=unet,
        normalization=Normalization(),
        postprocess=Postprocess() if config.method == "segment" else None,
        pixel_size_um=None,
        train_diameter_px=config.train_diameter_px
        if config.method == "segment"
        else None,
        # averaging the 8 rotations/flips adds about 0.6 dB to either denoiser
        # (docs/models.md) for 8x the time: off, so they keep up with live frames
        test_time_augmentation=False,
        training={
            "data": desc,
            "command": command,
            "seed": config.seed,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "patch_px": config.patch_px,
            **_scale_info(config),
            "config": config.model_dump(mode="json"),
        },
    )


def _scale_info(config: TrainConfig) -> dict[str, Any]:
    """Pixel and object sizes the model saw in training (for the card)."""
    if config.data_dir is not None and not config.sim_fraction:
        return {
            "pixel_size_um": "as in the user's TIFFs",
            "object_diameter_px": "as in the user's TIFFs",
        }
    spec = SEGMENT_SPEC if config.method == "segment" else DENOISE_SPEC
    pixels = sorted(round(6.5 / float(o.rstrip("x")), 4) for o in spec.objectives)
    if config.method == "segment":
        lo, hi = SegAugment().diameter_px
        objects = (
            f"{lo:g}-{hi:g} px (each crop rescaled to a random diameter, log-uniform); "
            f"diameter_px rescales inputs to {config.train_diameter_px:g} px"
        )
    else:
        objects = "nuclei of radius 4-8 µm: about 12-50 px across at these pixel sizes"
    if config.data_dir is not None:  # mixed with simulated crops
        return {
            "pixel_size_um": f"simulated {pixels}; the user's TIFFs as they are",
            "object_diameter_px": f"{objects} (the user's crops too)",
        }
    return {"pixel_size_um": pixels, "object_diameter_px": objects}


def train(
    config: TrainConfig,
    *,
    command: str = "",
    checkpoint_dir: Path | None = None,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Make the data, train, tune post-processing, score on validation frames.

    Parameters
    ----------
    command : the command line that reproduces this run (recorded in the card)
    progress : called as ``progress(phase, done, total, info)``

    Returns
    -------
    TrainResult with the trained model, loss history and validation scores
    """
    from smartscope.nn import evaluate

    t0 = time.perf_counter()
    if config.threads != "auto":
        torch.set_num_threads(config.threads)
    if progress:
        progress("data", 0, 1, {})
    train_items, val_items, desc, held = _data(config)
    real = config.data_dir is not None
    sampler = _sampler(config, train_items, real=real)
    sim_val: list = []
    if config.sim_fraction > 0:
        sim_train, sim_val, sim_desc, _ = _simulated_segment_data(config)
        sampler = MixedSampler(
            sampler,
            _sampler(config, sim_train, real=False),
            share_b=config.sim_fraction,
        )
        desc = (
            f"{desc}; {config.sim_fraction:.0%} of the training crops (binomial per "
            f"batch) instead from {sim_desc}"
        )
    val_batch = _val_sampler(config, [*val_items, *sim_val]).batch(
        config.val_patches, np.random.default_rng([config.seed, 0x7A1])
    )
    unet = UNetConfig(
        in_channels=1,
        out_channels=2 if config.method == "segment" else 1,
        depth=config.depth,
        base_channels=config.base_channels,
        residual=config.method == "care",
        # Noise2Void predicts a correction to a blind-spot smoothing of the
        # neighbours: without it the network must regress absolute levels from
        # noisy targets and was 5x worse than a Gaussian in bright backgrounds
        blind_residual=config.method == "n2v",
        pixel_unshuffle=config.pixel_unshuffle,
    )
    torch.manual_seed(config.seed)
    if config.init is not None:
        unet, start = _init_weights(config, unet)
        net = UNet(unet)
        net.load_state_dict(start)
    else:
        net = UNet(unet)
    history = fit(
        net,
        sampler,
        config,
        val_batch=val_batch,
        checkpoint_dir=checkpoint_dir,
        progress=(lambda s, r: progress("train", s, config.steps, r))
        if progress
        else None,
    )
    card = _card(config, unet, desc, command)
    if progress:
        progress("validate", 0, 1, {})
    # a copy for scoring: the Predictor fuses batch norm into the convolutions
    scoring = UNet(unet)
    scoring.load_state_dict(net.state_dict())
    model = build_model(scoring, card, name=config.method, device="cpu")
    if config.method == "segment":
        # the user's images come at their own scale: tuned and scored as
        # predict() runs them, with the automatic size
        post, tuning = evaluate.tune_postprocess(
            model, val_items, auto_size=real, also=sim_val
        )
        card = card.model_copy(update={"postprocess": post})
        model.card = card
        per_image, metrics = evaluate.score_segmenter(model, val_items)
        metrics["postprocess_tuning"] = tuning
        if sim_val:
            _, sim_metrics = evaluate.score_segmenter(model, sim_val)
            metrics["simulated_validation"] = {
                k: sim_metrics[k] for k in ("ap50", "ap75", "n_images", "n_nuclei")
            }
    else:
        has_truth = all(b is not None for _, b in val_items)
        per_image, metrics = (
            evaluate.score_denoiser(model, val_items) if has_truth else ([], {})
        )
    metrics["validation_data"] = held or f"{len(val_items)} held-out " + (
        "TIFFs" if real else "simulated frames (other seeds)"
    )
    card = card.model_copy(update={"validation": metrics})
    model.card = card
    return TrainResult(
        config=config,
        model=model,
        network=net,
        history=history,
        per_image=per_image,
        metrics=metrics,
        seconds=time.perf_counter() - t0,
    )
