"""event_rate: image slowly until a mitosis shows, fast while it lasts.

Event-driven acquisition after Mahecic et al. (2022, Nat. Methods): each
position's frames go through a :class:`~smartscope.analysis.mitosis.
MitosisDetector`; a position is *in an event* from the frame where a nucleus
looks mitotic until ``end_after_frames`` of its frames in a row show none.

Each position has its own rate (``per_position: true``, the default): a
position in an event is imaged every ``fast_interval_s``, the others every
``slow_interval_s`` (:class:`~smartscope.actions.SetInterval` with a
``position``). The run's interval, the tick at which positions are visited,
is the fast one while any position is in an event and the slow one when none
is. Within a time point the positions in an event come first, so when time
is short (realtime, a slow stage) the event is imaged on time and the slow
positions wait. With ``per_position: false`` every position follows the
run's interval: all are imaged fast while one of them is in an event.

A nucleus that stays "mitotic" for longer than ``max_event_s`` (a dead,
condensed nucleus, or a misdetection that does not go away) stops counting,
so one bright object cannot hold a position at the fast rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from smartscope.actions import Action, SetInterval, Stop
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
    stop_after_events: int | None = Field(
        None,
        ge=1,
        description="end the run when this many events have ended (an event: a "
        "position from its first mitotic frame to the end of its fast imaging)",
    )
    channel: str | None = Field(
        None, description="detect on frames of this channel only (None: every frame)"
    )
    detector: MitosisDetectorSettings = MitosisDetectorSettings()
    per_position: bool = Field(
        True,
        description="each position at its own rate (fast only where an event is "
        "under way); false: every position at the run's rate",
    )

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
    reads_images = frozenset({"labels"})  # the mitosis detector
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
        #: events that have ended (a position back to the slow rate)
        self.events_ended = 0
        self._stop_asked = False
        #: position -> the interval last asked for it, s
        self._asked_at: dict[str, float] = {}
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
        found = det.update(
            result.objects,
            background=result.background,
            image=frame.image,
            labels=result.labels,
            pixel_size_um=frame.pixel_size_um,
        )
        live = []
        for o in found:
            t0 = self._first_seen.setdefault((pos, o.track_id), frame.t_s)
            if frame.t_s - t0 <= p.max_event_s:
                live.append(o.track_id)
        self.detections.append((frame.t_s, pos, tuple(live)))
        was_busy = pos in self.in_event
        self._quiet[pos] = 0 if live else self._quiet.get(pos, p.end_after_frames) + 1
        busy = self.in_event
        if was_busy and pos not in busy:
            self.events_ended += 1
        stamp = {
            "source": self.name,
            "frame_index": frame.frame_index,
            "t_frame": frame.t_frame,
        }
        out: list[Action] = []
        if p.per_position:
            mine = p.fast_interval_s if pos in busy else p.slow_interval_s
            if self._asked_at.get(pos) != mine:
                self._asked_at[pos] = mine
                why = (
                    f"mitosis at {pos} (tracks {live})"
                    if pos in busy
                    else f"no mitosis at {pos}"
                )
                out.append(
                    SetInterval(interval_s=mine, position=pos, reason=why, **stamp)
                )
        want = p.fast_interval_s if busy else p.slow_interval_s
        # ask once per change (the controller applies it after this frame)
        current = run.state.interval_s if self._asked is None else self._asked
        self._asked = want
        if want != current:
            reason = (
                f"mitosis at {', '.join(sorted(busy))} (tracks {live} at {pos})"
                if busy
                else f"no mitosis at any position (last frame: {pos})"
            )
            out.append(SetInterval(interval_s=want, reason=reason, **stamp))
        n = p.stop_after_events
        if n is not None and self.events_ended >= n and not self._stop_asked:
            self._stop_asked = True
            out.append(Stop(reason=f"{self.events_ended} event(s) imaged", **stamp))
        return out
