"""event_rate: image slowly until a mitosis shows, fast while it lasts.

Event-driven acquisition after Mahecic et al. (2022, Nat. Methods): each
position's frames go through a :class:`~smartscope.analysis.mitosis.
MitosisDetector`; a position is *in an event* from the frame where a nucleus
looks mitotic until ``end_after_frames`` of its frames in a row show none.
The run goes to ``fast_interval_s`` while any position is in an event and
back to ``slow_interval_s`` when none is.

The interval is the run's, not a position's: the controller's
:class:`~smartscope.actions.SetInterval` sets the time between time points,
and every time point visits every position. So while one position is in an
event all positions are imaged fast; the light saved scales with the share of
time no position is in an event.

A nucleus that stays "mitotic" for longer than ``max_event_s`` (a dead,
condensed nucleus, or a misdetection that does not go away) stops counting,
so one bright object cannot hold the run at the fast rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from smartscope.actions import Action, SetInterval
from smartscope.analysis.mitosis import MitosisDetector, MitosisDetectorSettings
from smartscope.analysis.result import FrameResult
from smartscope.reactions.base import Reaction, ReactionParams, RunView, register

__all__ = ["EventRate", "EventRateParams"]


class EventRateParams(ReactionParams):
    slow_interval_s: float = Field(
        300.0, gt=0, description="time between time points while no event, s"
    )
    fast_interval_s: float = Field(
        30.0, gt=0, description="time between time points during an event, s"
    )
    end_after_frames: int = Field(
        1,
        ge=1,
        description="an event ends after this many frames of its position in a row "
        "without a mitotic nucleus",
    )
    max_event_s: float = Field(
        3600.0,
        gt=0,
        description="a nucleus flagged for longer than this no longer counts, s",
    )
    channel: str | None = Field(
        None, description="detect on frames of this channel only (None: every frame)"
    )
    detector: MitosisDetectorSettings = MitosisDetectorSettings()

    @model_validator(mode="after")
    def _check(self) -> EventRateParams:
        if self.fast_interval_s >= self.slow_interval_s:
            raise ValueError(
                f"fast_interval_s ({self.fast_interval_s}) must be shorter than "
                f"slow_interval_s ({self.slow_interval_s})"
            )
        return self


@register
class EventRate(Reaction):
    """Switch the run between a slow and a fast interval on detected mitoses."""

    name = "event_rate"
    Params = EventRateParams
    params: EventRateParams

    def __init__(self, params: EventRateParams | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self.reset()

    def reset(self) -> None:
        self._detectors: dict[str, MitosisDetector] = {}
        #: position -> frames in a row without a (counting) mitotic nucleus
        self._quiet: dict[str, int] = {}
        #: (position, track id) -> sample time first flagged, s
        self._first_seen: dict[tuple[str, int], float] = {}
        self._asked: float | None = None
        #: (t_s, position, mitotic track ids) per frame analysed, for audit
        self.detections: list[tuple[float, str, tuple[int, ...]]] = []

    @property
    def in_event(self) -> set[str]:
        """Positions in an event now."""
        return {p for p, q in self._quiet.items() if q < self.params.end_after_frames}

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        frame = result.frame
        p = self.params
        if result.error is not None or (
            p.channel is not None and frame.channel != p.channel
        ):
            return ()
        pos = frame.position
        det = self._detectors.get(pos)
        if det is None:
            det = self._detectors[pos] = MitosisDetector(p.detector)
        found = det.update(result.objects, background=result.background)
        live = []
        for o in found:
            t0 = self._first_seen.setdefault((pos, o.track_id), frame.t_s)
            if frame.t_s - t0 <= p.max_event_s:
                live.append(o.track_id)
        self.detections.append((frame.t_s, pos, tuple(live)))
        self._quiet[pos] = 0 if live else self._quiet.get(pos, p.end_after_frames) + 1
        busy = self.in_event
        want = p.fast_interval_s if busy else p.slow_interval_s
        # ask once per change (the controller applies it after this frame)
        current = run.state.interval_s if self._asked is None else self._asked
        self._asked = want
        if want == current:
            return ()
        reason = (
            f"mitosis at {', '.join(sorted(busy))} (tracks {live} at {pos})"
            if busy
            else f"no mitosis at any position (last frame: {pos})"
        )
        return (
            SetInterval(
                interval_s=want,
                source=self.name,
                reason=reason,
                frame_index=frame.frame_index,
                t_frame=frame.t_frame,
            ),
        )
