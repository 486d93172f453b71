"""Frame-to-frame tracking of segmented objects, one tracker per stage position.

The last step of the analysis of a frame: object centroids in stage µm in,
track ids out. Because centroids are in stage coordinates, a stage that moves
between frames (following a cell, say) does not disturb the tracks.

Linking is a global assignment (``scipy.optimize.linear_sum_assignment``) on
the distance between each track's predicted position and each object; a link
longer than ``max_step_um`` is never made. The assignment is solved per group
of tracks and objects within reach of each other, so its cost grows with the
crowding, not with the square of the number of nuclei. A track that finds no object is
kept for ``max_gap_frames`` frames of its position (gap closing), then ended.
Objects left over start new tracks.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["TrackIdCounter", "Tracker"]

# cost of a forbidden link: large enough that the assignment first maximises
# the number of allowed links, small enough to keep float sums exact
_FORBIDDEN = 1e9


def _link(
    px: np.ndarray, py: np.ndarray, x: np.ndarray, y: np.ndarray, max_step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal links (track index, object index) no longer than ``max_step``.

    The candidate links come from a k-d tree, and the assignment is solved
    separately in each connected group of tracks and objects that compete for
    each other: a lone candidate link is taken as it is, so a frame of a
    thousand well-separated nuclei costs about as much as a few crowded ones.
    """
    pairs = cKDTree(np.column_stack([px, py])).sparse_distance_matrix(
        cKDTree(np.column_stack([x, y])), max_step, output_type="ndarray"
    )
    if pairs.size == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    r = pairs["i"].astype(np.intp)
    c = pairs["j"].astype(np.intp)
    d = pairs["v"]
    n_trk = px.size
    graph = coo_matrix((np.ones(r.size), (r, n_trk + c)), shape=(n_trk + x.size,) * 2)
    _, group = connected_components(graph, directed=False)
    edge_group = group[r]
    edges_per_group = np.bincount(edge_group)
    alone = edges_per_group[edge_group] == 1
    rows, cols = [r[alone]], [c[alone]]
    crowded = ~alone
    if crowded.any():
        r, c, d, edge_group = r[crowded], c[crowded], d[crowded], edge_group[crowded]
        # groups of at most two tracks and two objects (most of a sparse
        # field's crowded groups) are solved all at once; the rest one by one
        n_groups = int(group.max()) + 1
        n_tracks = np.bincount(group[np.unique(r)], minlength=n_groups)
        n_objects = np.bincount(group[n_trk + np.unique(c)], minlength=n_groups)
        small = ((n_tracks <= 2) & (n_objects <= 2))[edge_group]
        if small.any():
            a, b = _link_pairs(r[small], c[small], d[small], edge_group[small])
            rows.append(a)
            cols.append(b)
            big = ~small
            r, c, d, edge_group = r[big], c[big], d[big], edge_group[big]
        order = np.argsort(edge_group, kind="stable")
        r, c, d, edge_group = r[order], c[order], d[order], edge_group[order]
        bounds = np.flatnonzero(np.diff(edge_group)) + 1
        for gr, gc, gd in zip(
            np.split(r, bounds), np.split(c, bounds), np.split(d, bounds), strict=True
        ):
            # a group holds a few tracks and objects: Python's set and
            # dict number them faster than np.unique (2 calls a group were
            # 40% of a 500-nucleus frame's linking)
            tracks = sorted(set(gr.tolist()))
            objects = sorted(set(gc.tolist()))
            at_t = {t: i for i, t in enumerate(tracks)}
            at_o = {o: i for i, o in enumerate(objects)}
            cost = np.full((len(tracks), len(objects)), _FORBIDDEN)
            cost[[at_t[t] for t in gr.tolist()], [at_o[o] for o in gc.tolist()]] = gd
            a, b = linear_sum_assignment(cost)
            ok = cost[a, b] < _FORBIDDEN
            rows.append(np.asarray(tracks, np.intp)[a[ok]])
            cols.append(np.asarray(objects, np.intp)[b[ok]])
    return np.concatenate(rows), np.concatenate(cols)


def _link_pairs(
    r: np.ndarray, c: np.ndarray, d: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The optimal links of groups of at most two tracks and two objects
    (candidate links ``r`` → ``c`` of length ``d`` in group ``g``), all
    groups at once: of the two ways to pair them, the one with the smaller
    sum of lengths, a missing link counting ``_FORBIDDEN`` (as the
    assignment the other groups get weighs them), then its allowed links."""
    groups, g = np.unique(g, return_inverse=True)
    n = groups.size
    lo_t = np.full(n, np.iinfo(np.intp).max)
    hi_t = np.full(n, -1)
    lo_o, hi_o = lo_t.copy(), hi_t.copy()
    np.minimum.at(lo_t, g, r)
    np.maximum.at(hi_t, g, r)
    np.minimum.at(lo_o, g, c)
    np.maximum.at(hi_o, g, c)
    # each group's tracks and objects numbered 0 (the lower index) and 1
    cost = np.full((n, 2, 2), _FORBIDDEN)
    cost[g, (r != lo_t[g]).astype(np.intp), (c != lo_o[g]).astype(np.intp)] = d
    crossed = cost[:, 0, 1] + cost[:, 1, 0] < cost[:, 0, 0] + cost[:, 1, 1]
    track = np.concatenate([lo_t, hi_t])
    other = np.where(crossed, hi_o, lo_o), np.where(crossed, lo_o, hi_o)
    obj = np.concatenate(other)
    length = np.concatenate(
        [
            np.where(crossed, cost[:, 0, 1], cost[:, 0, 0]),
            np.where(crossed, cost[:, 1, 0], cost[:, 1, 1]),
        ]
    )
    ok = length < _FORBIDDEN
    return track[ok].astype(np.intp), obj[ok].astype(np.intp)


class TrackIdCounter:
    """Hands out track ids 1, 2, 3 ..., unique across all trackers sharing it.

    Thread-safe.
    """

    def __init__(self, start: int = 1) -> None:
        if start < 1:
            raise ValueError(f"track ids are positive; start must be >= 1, got {start}")
        self._count = itertools.count(start)
        self._lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` ids, (n,) int64."""
        with self._lock:
            return np.fromiter(itertools.islice(self._count, n), np.int64, count=n)


class Tracker:
    """Links the objects of one stage position from frame to frame.

    Parameters
    ----------
    max_step_um : float
        Largest allowed distance between a track's predicted position and an
        object it is linked to, µm.
    max_gap_frames : int
        Consecutive frames a track may miss before it is ended (0: no gaps).
    predict_velocity : bool
        Predict each track's position from its last velocity (µm/s, or µm per
        frame when frames carry no time) before linking.
    ids : TrackIdCounter, optional
        Source of new track ids; share one between the trackers of a run so
        that ids are unique across positions. A new counter by default.

    Not thread-safe: one thread updates a tracker.
    """

    def __init__(
        self,
        *,
        max_step_um: float = 15.0,
        max_gap_frames: int = 2,
        predict_velocity: bool = True,
        ids: TrackIdCounter | None = None,
    ) -> None:
        if not max_step_um > 0:
            raise ValueError(f"max_step_um must be > 0, got {max_step_um!r}")
        if max_gap_frames < 0:
            raise ValueError(f"max_gap_frames must be >= 0, got {max_gap_frames!r}")
        self.max_step_um = float(max_step_um)
        self.max_gap_frames = int(max_gap_frames)
        self.predict_velocity = bool(predict_velocity)
        self._ids = ids if ids is not None else TrackIdCounter()
        self._n_updates = 0
        self._clear()

    def _clear(self) -> None:
        # live tracks, struct of arrays
        self._track = np.empty(0, np.int64)
        self._x = np.empty(0)
        self._y = np.empty(0)
        self._vx = np.empty(0)
        self._vy = np.empty(0)
        self._t = np.empty(0)
        self._missed = np.empty(0, np.int64)
        self._seen = np.empty(0, np.int64)

    def reset(self) -> None:
        """End every track (ids already handed out are not reused)."""
        self._clear()

    @property
    def n_tracks(self) -> int:
        """Number of live tracks (seen in the last ``max_gap_frames + 1`` frames)."""
        return int(self._track.size)

    def predicted_positions(
        self, t_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where the live tracks are expected at time ``t_s``: (x_um, y_um), (T,) each.

        Without ``t_s`` the next frame is assumed, one time unit after the last
        update.
        """
        t = float(self._n_updates + 1) if t_s is None else float(t_s)
        if not self.predict_velocity:
            return self._x.copy(), self._y.copy()
        dt = t - self._t
        dx = self._vx * dt
        dy = self._vy * dt
        # never extrapolate further than a link may reach
        step = np.hypot(dx, dy)
        too_far = step > self.max_step_um
        if too_far.any():
            scale = self.max_step_um / step[too_far]
            dx[too_far] *= scale
            dy[too_far] *= scale
        return self._x + dx, self._y + dy

    def update(
        self, x_um: np.ndarray, y_um: np.ndarray, *, t_s: float | None = None
    ) -> np.ndarray:
        """Link this frame's objects to the live tracks.

        Parameters
        ----------
        x_um, y_um : (N,) float arrays
            Object centroids in stage coordinates, µm.
        t_s : float, optional
            Time of the frame, s (sample time). Without it, frames are taken
            to be evenly spaced. Give it always or never for one tracker.

        Returns
        -------
        (N,) int64 ndarray
            Track id of each object, > 0.
        """
        x_um = np.asarray(x_um, np.float64).ravel()
        y_um = np.asarray(y_um, np.float64).ravel()
        if x_um.shape != y_um.shape:
            raise ValueError(
                f"x_um {x_um.shape} and y_um {y_um.shape} differ in length"
            )
        self._n_updates += 1
        t = float(self._n_updates) if t_s is None else float(t_s)
        n_obj, n_trk = x_um.size, self._track.size
        obj_track = np.full(n_obj, -1, np.intp)  # index into the live tracks
        if n_obj and n_trk:
            px, py = self.predicted_positions(t)
            rows, cols = _link(px, py, x_um, y_um, self.max_step_um)
            obj_track[cols] = rows
        matched = obj_track >= 0
        trk = obj_track[matched]
        # update matched tracks
        hit = np.zeros(n_trk, bool)
        hit[trk] = True
        if trk.size:
            new_x, new_y = x_um[matched], y_um[matched]
            dt = t - self._t[trk]
            moving = dt > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                vx = np.where(moving, (new_x - self._x[trk]) / dt, 0.0)
                vy = np.where(moving, (new_y - self._y[trk]) / dt, 0.0)
            # smooth the velocity over the last links once there is a history
            had_v = self._seen[trk] >= 2
            self._vx[trk] = np.where(had_v, 0.5 * (self._vx[trk] + vx), vx)
            self._vy[trk] = np.where(had_v, 0.5 * (self._vy[trk] + vy), vy)
            self._x[trk], self._y[trk] = new_x, new_y
            self._t[trk] = t
            self._seen[trk] += 1
        self._missed[~hit] += 1
        self._missed[hit] = 0
        ids = np.empty(n_obj, np.int64)
        ids[matched] = self._track[trk]
        # end tracks missing for too long, start tracks for unmatched objects
        alive = self._missed <= self.max_gap_frames
        new = ~matched
        n_new = int(new.sum())
        new_ids = self._ids.take(n_new)
        ids[new] = new_ids
        self._track = np.concatenate([self._track[alive], new_ids])
        self._x = np.concatenate([self._x[alive], x_um[new]])
        self._y = np.concatenate([self._y[alive], y_um[new]])
        self._vx = np.concatenate([self._vx[alive], np.zeros(n_new)])
        self._vy = np.concatenate([self._vy[alive], np.zeros(n_new)])
        self._t = np.concatenate([self._t[alive], np.full(n_new, t)])
        self._missed = np.concatenate([self._missed[alive], np.zeros(n_new, np.int64)])
        self._seen = np.concatenate([self._seen[alive], np.ones(n_new, np.int64)])
        return ids
