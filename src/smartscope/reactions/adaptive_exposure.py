"""adaptive_exposure: keep the signal of segmented objects in a target range.

Signal = median over objects of (mean intensity - background), in ADU, which
is proportional to exposure × laser power. When it leaves the band
``target_adu · (1 ± tolerance)``, the reaction scales the light: exposure
first (within its range) at the lowest power, and laser power only when the
exposure is at its maximum, so no more light is used than needed.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from smartscope.actions import Action, SetExposure, SetLaserPower
from smartscope.analysis.result import FrameResult
from smartscope.reactions.base import Reaction, ReactionParams, RunView, register

__all__ = ["AdaptiveExposure", "AdaptiveExposureParams"]


class AdaptiveExposureParams(ReactionParams):
    target_adu: float = Field(
        1000.0, gt=0, description="wanted object signal above background, ADU"
    )
    tolerance: float = Field(
        0.1, ge=0, lt=1, description="dead band as a fraction of the target"
    )
    min_exposure_ms: float = Field(1.0, gt=0)
    max_exposure_ms: float = Field(500.0, gt=0)
    min_power_mw: float = Field(1.0, ge=0)
    max_power_mw: float = Field(100.0, gt=0)
    max_change: float = Field(
        4.0, gt=1, description="largest light change factor per step"
    )
    channel: str | None = Field(
        None, description="only react to frames of this channel"
    )

    @model_validator(mode="after")
    def _ranges(self) -> AdaptiveExposureParams:
        if self.min_exposure_ms > self.max_exposure_ms:
            raise ValueError("min_exposure_ms must not exceed max_exposure_ms")
        if self.min_power_mw > self.max_power_mw:
            raise ValueError("min_power_mw must not exceed max_power_mw")
        return self


@register
class AdaptiveExposure(Reaction):
    """Exposure first, laser power second, to hold the object signal at target."""

    name = "adaptive_exposure"
    reads_images = frozenset()
    Params = AdaptiveExposureParams
    params: AdaptiveExposureParams

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        p = self.params
        frame = result.frame
        if result.error is not None or not result.objects:
            return ()
        if p.channel is not None and frame.channel != p.channel:
            return ()
        signals = sorted(o.mean_intensity - result.background for o in result.objects)
        signal = signals[len(signals) // 2]
        if abs(signal - p.target_adu) <= p.tolerance * p.target_adu:
            return ()
        exp_now, pow_now = frame.exposure_ms, frame.laser_mw or run.state.laser_mw
        factor = p.target_adu / signal if signal > 0 else p.max_change
        factor = min(max(factor, 1.0 / p.max_change), p.max_change)
        light = exp_now * max(pow_now, 1e-9) * factor
        base_pow = max(p.min_power_mw, 1e-9)
        exp_new = light / base_pow
        if exp_new <= p.max_exposure_ms:
            pow_new = p.min_power_mw
            exp_new = max(exp_new, p.min_exposure_ms)
        else:
            exp_new = p.max_exposure_ms
            pow_new = min(light / exp_new, p.max_power_mw)
        why = f"object signal {signal:.0f} ADU vs target {p.target_adu:.0f} ADU"
        out: list[Action] = []
        common = {
            "source": self.name,
            "reason": why,
            "frame_index": frame.frame_index,
            "t_frame": frame.t_frame,
        }
        cur_exp, cur_pow = run.state.exposure_ms, run.state.laser_mw
        if abs(exp_new - cur_exp) > 1e-6 * cur_exp:
            out.append(
                SetExposure(
                    exposure_ms=exp_new, channel=frame.channel or None, **common
                )
            )
        if abs(pow_new - cur_pow) > 1e-6 * max(cur_pow, 1e-6):
            out.append(SetLaserPower(power_mw=pow_new, **common))
        return out
