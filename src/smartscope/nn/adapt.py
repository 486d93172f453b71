"""Noise2Void that keeps learning during a run: fine-tuning in a process beside it.

``analysis.denoise: {model: denoise-n2v, adapt: true}`` gives the analysis a
:class:`DenoiserAdapter`. It starts a separate, low-priority process
(:func:`_worker`) that holds a copy of the denoiser's U-Net, receives the
run's raw frames, keeps the latest ``frames_kept`` of them and trains on them
with the blind-spot loss of :mod:`smartscope.nn.train` (a Noise2Void network
needs no clean targets, so the run's own frames are its training data). Each
``steps_per_version`` steps it sends back a weight version; the analysis puts
it in place between two frames (:meth:`DenoiserAdapter.before_frame`), so a
frame is always denoised by one set of weights, and the version that denoised
it is in its result.

Two pacings (:class:`~smartscope.analysis.settings.AdaptSettings`):

- ``background`` (real time): the process trains whenever it has frames and
  the CPU is free (niceness 19, one thread); frames are offered without
  waiting and dropped from the training set when the process is behind, and
  the analysis takes a version when one has arrived. Acquisition and analysis
  never wait for it.
- ``paced`` (the simulator's virtual time): every ``frames_per_version``
  frames the process is asked for one version trained on exactly the frames
  sent so far, and the analysis waits for it ``frames_per_version`` frames
  later. The training overlaps the analysis of those frames, and a seeded run
  adapts the same way whatever the host's speed.

At the end, :meth:`DenoiserAdapter.save` writes the adapted weights as a
loadable model package (``smartscope.nn.load_model(folder)``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from smartscope.analysis.settings import AdaptSettings
    from smartscope.nn.model import DenoiseModel

__all__ = ["AdaptError", "DenoiserAdapter", "VersionInfo", "why_not_adaptable"]

logger = logging.getLogger(__name__)

#: steps of linear learning-rate warm-up at the start of the fine-tuning
_WARMUP_STEPS = 20


class AdaptError(RuntimeError):
    """The denoiser cannot be adapted (not a Noise2Void model, no weights)."""


@dataclass(frozen=True)
class VersionInfo:
    """One weight version of the adapted denoiser.

    ``version`` counts from 1 (0: the weights as loaded); ``steps`` and
    ``frames_seen`` are totals since the start; ``loss`` is the mean
    blind-spot loss of the version's own steps (10·log10 of the masked MSE
    in normalised units: lower is better); ``seconds`` the process's time
    for those steps."""

    version: int
    steps: int
    frames_seen: int
    frames_kept: int
    loss: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "steps": self.steps,
            "frames_seen": self.frames_seen,
            "frames_kept": self.frames_kept,
            "loss": round(self.loss, 4),
            "seconds": round(self.seconds, 3),
        }


# ------------------------------------------------------------------ the process


def _worker(
    unet: dict[str, Any],
    state: dict[str, np.ndarray],
    settings: dict[str, Any],
    inbox: Any,
    outbox: Any,
) -> None:
    """The training process: frames in, weight versions out."""
    with contextlib.suppress(OSError):
        os.nice(int(settings["nice"]))
    try:
        _train_loop(unet, state, settings, inbox, outbox)
    except BaseException as e:  # report, never hang the run
        with contextlib.suppress(Exception):
            outbox.put(("error", f"{type(e).__name__}: {e}"))


def _train_loop(
    unet: dict[str, Any],
    state: dict[str, np.ndarray],
    settings: dict[str, Any],
    inbox: Any,
    outbox: Any,
) -> None:
    import torch

    from smartscope.nn.datasets import N2VSampler
    from smartscope.nn.train import _loss_fn
    from smartscope.nn.unet import UNet, UNetConfig, freeze_norm_statistics

    s = settings
    torch.set_num_threads(int(s["threads"]))
    torch.manual_seed(int(s["seed"]))
    net = UNet(UNetConfig(**unet))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    net.train()
    # The batch norms keep the loaded statistics while the weights learn:
    # updated from 8 masked 64-px patches of a few frames, the running
    # statistics moved faster than the weights could follow, and version 1
    # denoised 5-10 dB worse than the weights as loaded.
    freeze_norm_statistics(net)
    opt = torch.optim.AdamW(net.parameters(), lr=float(s["lr"]), weight_decay=1e-4)
    loss_fn = _loss_fn("n2v")
    frames: list[np.ndarray] = []
    seen = steps = version = 0
    paced = s["pacing"] == "paced"
    parent = mp.parent_process()

    def take(item: Any) -> bool:
        """Handle one message; False to end."""
        nonlocal seen, version
        kind = item[0]
        if kind == "stop":
            return False
        if kind == "frame":
            frames.append(item[1])
            del frames[: -int(s["frames_kept"])]
            seen += 1
        elif kind == "train":
            version = int(item[1])
            train_version(version)
        return True

    def train_version(v: int) -> None:
        """Train one version's steps (none without frames) and send it: a
        paced run waits for every version it asked for."""
        nonlocal steps
        t0 = time.process_time()
        losses = [math.nan]
        if frames:
            losses = train_steps(v)
        weights = {k: t.detach().numpy().copy() for k, t in net.state_dict().items()}
        info = VersionInfo(
            version=v,
            steps=steps,
            frames_seen=seen,
            frames_kept=len(frames),
            loss=float(np.mean(losses)),
            seconds=time.process_time() - t0,
        )
        outbox.put(("version", info, weights))

    def train_steps(v: int) -> list[float]:
        nonlocal steps
        sampler = N2VSampler(
            frames,
            patch_px=int(s["patch_px"]),
            mask_fraction=float(s["mask_fraction"]),
        )
        rng = np.random.default_rng([int(s["seed"]), v, 0xADA])
        torch.manual_seed(int(s["seed"]) * 100_003 + v)
        losses = []
        for _ in range(int(s["steps_per_version"])):
            steps += 1
            for group in opt.param_groups:
                group["lr"] = float(s["lr"]) * min(1.0, steps / _WARMUP_STEPS)
            x, y = sampler.batch(int(s["batch_size"]), rng)
            loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    def wait() -> Any:
        """The next message; None when the parent has gone."""
        while True:
            try:
                return inbox.get(timeout=1.0)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return None

    done = False
    while True:
        if paced or not frames or done:
            # paced: only asked-for versions; background: wait for a first
            # frame; after max_versions: wait for the stop, dropping frames
            item = wait()
            if item is None or item[0] == "stop":
                return
            if not done:
                take(item)
            continue
        # background: take whatever arrived, then train one more version
        while True:
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                break
            if not take(item):
                return
        version += 1
        train_version(version)
        done = s["max_versions"] is not None and version >= int(s["max_versions"])


# ------------------------------------------------------------------ the parent


class DenoiserAdapter:
    """Fine-tunes ``model`` on the frames it is given, in a process of its own.

    Parameters
    ----------
    model : the loaded Noise2Void :class:`~smartscope.nn.model.DenoiseModel`
        whose weights are replaced as versions arrive
    settings : AdaptSettings
    paced : True for the paced mode (see the module's text), False for
        background; ``settings.pacing`` other than "auto" overrides it

    Use from one thread (the analysis worker): :meth:`before_frame` before
    denoising a frame, :meth:`add_frame` with its raw image, :meth:`close`
    at the end.
    """

    def __init__(
        self, model: DenoiseModel, settings: AdaptSettings, *, paced: bool = False
    ) -> None:
        problem = why_not_adaptable(model)
        if problem is not None:
            raise AdaptError(f"{model.name!r}: {problem}")
        card = model.card
        weights = {
            k: v.detach().cpu().numpy().copy()
            for k, v in model.source_state.items()  # type: ignore[union-attr]
        }
        self.model = model
        self.settings = settings
        self.paced = paced if settings.pacing == "auto" else settings.pacing == "paced"
        self.base_name = model.name
        self.version = 0
        self.history: list[VersionInfo] = []
        self.error: str | None = None
        self._state = weights
        self._sent = 0
        self._dropped = 0
        self._asked = 0
        self._due: list[tuple[int, int]] = []  # (frames sent when due, version)
        ctx = mp.get_context("spawn")
        self._inbox = ctx.Queue(maxsize=0 if self.paced else 4)
        self._outbox = ctx.Queue()
        s = settings.model_dump()
        s["pacing"] = "paced" if self.paced else "background"
        self._process = ctx.Process(
            target=_worker,
            args=(card.unet.model_dump(), weights, s, self._inbox, self._outbox),
            name="smartscope-adapt",
            daemon=True,
        )
        self._process.start()

    # ------------------------------------------------------------------ frames

    @property
    def active(self) -> bool:
        """Whether frames are still taken (no error, versions left)."""
        m = self.settings.max_versions
        if self.error is not None:
            return False
        return m is None or (self._asked if self.paced else self.version) < m

    def add_frame(self, image: np.ndarray) -> None:
        """Offer one raw frame for training (never blocks in background pacing)."""
        if not self.active or self._process is None:
            return
        # a copy in the camera's dtype: the queue pickles it later, on its own
        # thread, and the sampler makes it float32 in the training process
        a = np.array(image, copy=True)
        if self.paced:
            self._inbox.put(("frame", a))
            self._sent += 1
            k = self.settings.frames_per_version
            m = self.settings.max_versions
            if self._sent % k == 0 and (m is None or self._asked < m):
                self._asked += 1
                self._inbox.put(("train", self._asked))
                self._due.append((self._sent + k, self._asked))
            return
        try:
            self._inbox.put_nowait(("frame", a))
            self._sent += 1
        except queue.Full:
            self._dropped += 1

    def before_frame(self) -> VersionInfo | None:
        """Put the newest weight version that has arrived (paced: that is due)
        in place; the version taken, or None when the weights stay."""
        if self._process is None:
            return None
        latest: tuple[VersionInfo, dict[str, np.ndarray]] | None = None
        if self.paced:
            while self._due and self._sent >= self._due[0][0]:
                _, v = self._due.pop(0)
                got = self._wait_for(v, self.settings.version_timeout_s)
                if got is None:
                    # too slow: wait no more; what was asked for is taken
                    # when it arrives
                    self._due.clear()
                    self.paced = False
                    break
                latest = got
        else:  # background: the newest that has arrived
            for got in self._drain():
                latest = got
        if latest is None:
            return None
        info, weights = latest
        self._apply(info, weights)
        return info

    def _drain(self) -> list[tuple[VersionInfo, dict[str, np.ndarray]]]:
        out = []
        while True:
            try:
                msg = self._outbox.get_nowait()
            except queue.Empty:
                break
            got = self._message(msg)
            if got is not None:
                out.append(got)
        proc = self._process
        if self.error is None and proc is not None and not proc.is_alive():
            self.error = (
                f"the training process ended unexpectedly (exit code "
                f"{proc.exitcode}); the run goes on with version {self.version}"
            )
            logger.warning("denoiser adaptation stopped: %s", self.error)
        return out

    def _wait_for(
        self, version: int, timeout_s: float
    ) -> tuple[VersionInfo, dict[str, np.ndarray]] | None:
        deadline = time.monotonic() + timeout_s
        while self.error is None:
            left = deadline - time.monotonic()
            if left <= 0 or (
                self._process is not None and not self._process.is_alive()
            ):
                break
            try:
                msg = self._outbox.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            got = self._message(msg)
            if got is not None and got[0].version >= version:
                return got
        if self.error is None:
            logger.warning(
                "denoiser adaptation: version %d did not arrive within %.0f s; "
                "taking later versions as they come",
                version,
                timeout_s,
            )
        return None

    def _message(self, msg: Any) -> tuple[VersionInfo, dict[str, np.ndarray]] | None:
        if msg[0] == "error":
            self.error = str(msg[1])
            logger.warning("denoiser adaptation stopped: %s", self.error)
            return None
        return msg[1], msg[2]

    def _apply(self, info: VersionInfo, weights: dict[str, np.ndarray]) -> None:
        self.model.load_state(weights)
        self._state = weights
        self.version = info.version
        self.history.append(info)

    # --------------------------------------------------------------------- end

    def close(self) -> None:
        """End the training process (versions not yet taken are dropped: the
        weights kept are those that denoised the last frames)."""
        proc = self._process
        if proc is None:
            return
        with contextlib.suppress(Exception):
            self._inbox.put(("stop",), timeout=1.0)
        proc.join(5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        for q in (self._inbox, self._outbox):
            with contextlib.suppress(Exception):
                q.cancel_join_thread()
                q.close()
        self._process = None

    @property
    def frames_dropped(self) -> int:
        """Frames not offered to the training because it was behind."""
        return self._dropped

    def save(self, folder: str | Path) -> Path:
        """Write the current weights as a model package in ``folder``."""
        import torch

        from smartscope.nn.model import save_model
        from smartscope.nn.unet import UNet

        card = self.model.card
        net = UNet(card.unet)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in self._state.items()})
        last = self.history[-1] if self.history else None
        s = self.settings
        training = {
            "data": (
                f"adapted during a run from {self.base_name!r}: Noise2Void on the "
                f"run's own raw frames (the latest {s.frames_kept})"
            ),
            "adapted_from": self.base_name,
            "base_training": card.training,
            "versions": self.version,
            "steps": last.steps if last else 0,
            "frames_seen": last.frames_seen if last else 0,
            "settings": s.model_dump(mode="json"),
        }
        new = card.model_copy(
            update={
                "training": training,
                "validation": {
                    "note": "adapted on the run's frames; no held-out truth in a run",
                    "base_validation": card.validation,
                },
            }
        )
        return save_model(
            net,
            new,
            folder,
            name=f"{self.base_name}-adapted",
            description=(
                f"{self.base_name} fine-tuned on the frames of one run "
                f"({self.version} versions, {training['steps']} steps)"
            ),
        )


def why_not_adaptable(model: Any) -> str | None:
    """Why ``model`` cannot be fine-tuned during a run, or None when it can:
    it must be a Noise2Void denoiser (it learns from noisy frames alone) with
    its U-Net's PyTorch weights (the predictor's copy has its batch norm
    folded into the convolutions)."""
    card = getattr(model, "card", None)
    method = getattr(card, "method", None)
    if getattr(card, "kind", None) != "denoise" or method != "n2v":
        return (
            f"adapting during a run needs a Noise2Void denoiser (card method n2v), "
            f"which learns from the run's noisy frames alone; this one is "
            f"{method!r} (use e.g. denoise-n2v)"
        )
    if getattr(model, "source_state", None) is None:
        return (
            "adapting during a run needs PyTorch state-dict weights to fine-tune; "
            "this model has TorchScript weights only"
        )
    return None
