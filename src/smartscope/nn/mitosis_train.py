"""Training and scoring the mitosis classifier (``smartscope train mitosis``).

:func:`train_mitosis` simulates time-lapses with truth
(:mod:`smartscope.nn.mitosis_data`), on training seeds, tuning seeds (best
step and probability threshold) and validation seeds (the QC, never used for
a choice), fits a :class:`~smartscope.nn.mitosis_model.MitosisNet` with a
class-weighted cross entropy on rotated and flipped crops, and scores it and
the threshold detector on the validation runs (:func:`event_scores`).
:func:`write_mitosis_model` writes the model folder, its README and QC.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from smartscope.nn.mitosis_data import (
    PROTOCOL_RUNS,
    TRAIN_RUNS,
    ObjectSet,
    RunSpec,
    simulate_objects,
)
from smartscope.nn.mitosis_model import (
    CHANNELS,
    ClassifierCard,
    CropSettings,
    MitosisClassifier,
    MitosisNet,
    save_classifier,
)

__all__ = [
    "MitosisTrainConfig",
    "MitosisTrainResult",
    "event_scores",
    "train_mitosis",
    "write_mitosis_model",
]

#: the event protocol's report seeds: never used to train or choose
RESERVED_SEEDS = frozenset({11, 12, 21, 22, 23, 24, 25, 26, 201, 202, 203})

Progress = Callable[[str, int, int, dict[str, float]], None]


class MitosisTrainConfig(BaseModel):
    """One training run of the mitosis classifier. Seeds: run ``k`` of a set
    uses seed ``first + k``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(600, ge=1, le=1_000_000)
    batch_size: int = Field(128, ge=2, le=4096)
    lr: float = Field(3e-3, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    width: int = Field(16, ge=4, le=128)
    seed: int = Field(0, description="initialisation and augmentation")
    threads: int = Field(2, ge=1, le=256)
    train_runs: int = Field(24, ge=1, le=10_000)
    train_seed: int = Field(1000, ge=0)
    tune_runs: int = Field(4, ge=1, le=10_000)
    tune_seed: int = Field(2000, ge=0)
    val_runs: int = Field(6, ge=1, le=10_000)
    val_seed: int = Field(5200, ge=0)
    protocol_val_runs: int = Field(
        5, ge=0, le=10_000, description="6-h runs of the event protocol's scene"
    )
    protocol_val_seed: int = Field(6200, ge=0)
    time_points: int = Field(24, ge=1, description="per training/tuning run")
    val_every: int = Field(100, ge=1)
    crop: CropSettings = CropSettings()

    def seeds(self, which: str) -> list[int]:
        first, n = {
            "train": (self.train_seed, self.train_runs),
            "tune": (self.tune_seed, self.tune_runs),
            "val": (self.val_seed, self.val_runs),
            "protocol": (self.protocol_val_seed, self.protocol_val_runs),
        }[which]
        return list(range(first, first + n))

    def check_seeds(self) -> None:
        """Refuse overlapping seed sets and the protocol's report seeds."""
        sets = {k: set(self.seeds(k)) for k in ("train", "tune", "val", "protocol")}
        for k, s in sets.items():
            bad = sorted(s & RESERVED_SEEDS)
            if bad:
                raise ValueError(
                    f"{k} seeds {bad} are the event protocol's report seeds; "
                    "choose others"
                )
        names = list(sets)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                common = sorted(sets[a] & sets[b])
                if common:
                    raise ValueError(
                        f"{a} and {b} seeds overlap ({common[:5]}): validation "
                        "must be on separate runs"
                    )


@dataclass
class MitosisTrainResult:
    """What :func:`train_mitosis` produced."""

    config: MitosisTrainConfig
    network: MitosisNet
    card: ClassifierCard
    test_crops: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# ------------------------------------------------------------------ scoring


def event_scores(objects: ObjectSet, flags: np.ndarray) -> dict[str, Any]:
    """Per-frame and per-event precision and recall of ``flags`` (N,) bool
    against the truth of ``objects``.

    Per frame: each object is a call (flagged or not) against the truth state
    of the cell under it (no cell: not mitotic). Per event: an event is one
    mitosis of one truth cell (run, cell id); it is captured when an object
    on that cell is flagged at any frame while it is mitotic (event recall).
    A detection is a maximal run of consecutive time points at which one
    track is flagged; it is true when any of its flagged objects is mitotic
    (event precision).
    """
    flags = np.asarray(flags, bool)
    truth = objects.mitotic
    tp = int((flags & truth).sum())
    fp = int((flags & ~truth).sum())
    fn = int((~flags & truth).sum())
    ev_keys = objects.run[truth] * (1 << 32) + objects.cell[truth]
    events = np.unique(ev_keys)
    captured = np.unique(ev_keys[flags[truth]])
    # detections: consecutive flagged time points of one (run, position, track)
    idx = np.flatnonzero(flags)
    order = np.lexsort(
        (
            objects.t[idx],
            objects.track[idx],
            objects.position[idx],
            objects.run[idx],
        )
    )
    idx = idx[order]
    n_det = n_true_det = 0
    prev_key: tuple[int, int, int] | None = None
    prev_t = -10
    hit = False
    for i in idx:
        key = (int(objects.run[i]), int(objects.position[i]), int(objects.track[i]))
        t = int(objects.t[i])
        if key != prev_key or t != prev_t + 1:
            if prev_key is not None:
                n_true_det += hit
            n_det += 1
            hit = False
        hit = hit or bool(truth[i])
        prev_key, prev_t = key, t
    if prev_key is not None:
        n_true_det += hit

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "objects": len(objects),
        "mitotic_objects": int(truth.sum()),
        "frame_tp": tp,
        "frame_fp": fp,
        "frame_fn": fn,
        "frame_precision": ratio(tp, tp + fp),
        "frame_recall": ratio(tp, tp + fn),
        "events": len(events),
        "events_captured": len(captured),
        "event_recall": ratio(len(captured), len(events)),
        "detections": n_det,
        "true_detections": n_true_det,
        "event_precision": ratio(n_true_det, n_det),
    }


# ------------------------------------------------------------------ training


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation by 90°, flip, and a scale of 0.9-1.1 on each of the two
    signal channels (the references vary with who else is in view and with
    the track's recent frames)."""
    k = int(torch.randint(4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    scale = 0.9 + 0.2 * torch.rand(x.shape[0], 2, 1, 1, generator=gen)
    return torch.cat(
        [x[:, :1] * scale[:, :1], x[:, 1:2], x[:, 2:3] * scale[:, 1:], x[:, 3:]], dim=1
    )


def _probabilities(net: MitosisNet, crops: np.ndarray) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), 1024):
            t = torch.from_numpy(crops[i : i + 1024])
            out.append(torch.sigmoid(net(t))[:, 0].numpy())
    net.train()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _best_threshold(p: np.ndarray, truth: np.ndarray) -> float:
    """The probability threshold (0.2-0.8) with the best F1 on ``p``, ties to 0.5."""
    best, best_f1 = 0.5, -1.0
    for th in sorted(
        np.round(np.arange(0.2, 0.81, 0.05), 2), key=lambda v: abs(v - 0.5)
    ):
        f = p >= th
        tp = float((f & truth).sum())
        f1 = 2 * tp / max(1.0, float(f.sum() + truth.sum()))
        if f1 > best_f1 + 1e-9:
            best, best_f1 = float(th), f1
    return best


def _data_text(config: MitosisTrainConfig) -> str:
    tr = TRAIN_RUNS
    return (
        f"{config.train_runs} simulated time-lapses (seeds {config.train_seed}-"
        f"{config.train_seed + config.train_runs - 1}; smartscope.nn.mitosis_data."
        f"TRAIN_RUNS): {tr.positions} 10x DAPI fields x {config.time_points} time "
        f"points {tr.interval_s:g} s apart, 512 px; scenes drawn with density "
        f"{tr.density_per_mm2} /mm², radius {tr.radius_um_mean} µm, cycle "
        f"{tr.cycle_h_mean} h, visible mitosis {tr.mitosis_min} min, brightness sd "
        f"{tr.brightness_sd}; {tr.lethal_share:.0%} of the runs lethal within the run "
        f"(3-10 J/cm²: pyknotic dead nuclei); {tr.power_mw} mW x {tr.exposure_ms} ms, "
        f"defocus {tr.defocus_um} µm. Objects from the classical segmenter "
        "(diameter_um 12), labelled with the truth state of the cell under them "
        "(no cell: not mitotic)."
    )


def train_mitosis(
    config: MitosisTrainConfig,
    *,
    command: str = "",
    progress: Progress | None = None,
) -> MitosisTrainResult:
    """Simulate the data, fit the classifier and score it (see the module doc)."""
    config.check_seeds()
    t_start = time.perf_counter()
    torch.set_num_threads(config.threads)
    crop = config.crop
    spec = TRAIN_RUNS.model_copy(update={"time_points": config.time_points})

    def sim(
        which: str, runs: RunSpec, classifier: MitosisClassifier | None = None
    ) -> ObjectSet:
        seeds = config.seeds(which)
        if progress is not None:
            progress(f"simulating {which} runs", 0, len(seeds), {})
        return simulate_objects(
            seeds,
            runs,
            crop=crop,
            classifier=classifier,
            progress=None
            if progress is None
            else lambda k: progress(f"simulating {which} runs", k, len(seeds), {}),
        )

    train_set = sim("train", spec)
    tune_set = sim("tune", spec)
    if not train_set.mitotic.any():
        from smartscope.nn.errors import ModelError

        raise ModelError(
            f"the {config.train_runs} training runs hold no mitotic nucleus; "
            "use more --train-runs"
        )
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    net = MitosisNet(len(CHANNELS), config.width)
    opt = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15
    )
    x_all = torch.from_numpy(train_set.crops)
    y_all = torch.from_numpy(train_set.mitotic.astype(np.float32))
    # half of each batch mitotic: the classes are about 1:30
    pos = torch.from_numpy(np.flatnonzero(train_set.mitotic))
    neg = torch.from_numpy(np.flatnonzero(~train_set.mitotic))
    n_pos = config.batch_size // 4
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history: list[dict[str, float]] = []
    best_state, best_score = None, -1.0
    tune_truth = tune_set.mitotic
    net.train()
    for step in range(1, config.steps + 1):
        bi = torch.cat(
            [
                pos[torch.randint(len(pos), (n_pos,), generator=gen)],
                neg[
                    torch.randint(len(neg), (config.batch_size - n_pos,), generator=gen)
                ],
            ]
        )
        xb = _augment(x_all[bi], gen)
        loss = loss_fn(net(xb)[:, 0], y_all[bi])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % config.val_every == 0 or step == config.steps:
            p = _probabilities(net, tune_set.crops)
            th = _best_threshold(p, tune_truth)
            s = event_scores(tune_set, p >= th)
            f1 = (
                2
                * s["frame_tp"]
                / max(1, 2 * s["frame_tp"] + s["frame_fp"] + s["frame_fn"])
            )
            rec = {
                "step": step,
                "train_loss": loss.item(),
                "tune_f1": f1,
                "threshold": th,
            }
            history.append(rec)
            if f1 > best_score:
                best_score = f1
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
                best_threshold = th
            if progress is not None:
                progress("train", step, config.steps, rec)
        elif progress is not None and step % 10 == 0:
            progress("train", step, config.steps, {})
    assert best_state is not None  # the last step always validates
    net.load_state_dict(best_state)
    net.eval()

    # QC on the validation runs, never used for a choice: the classifier as
    # in a run (its track references follow its own calls)
    metrics: dict[str, Any] = {}
    clf = MitosisClassifier(
        net, ClassifierCard(width=config.width, crop=crop, threshold=best_threshold)
    )
    val_sets = {"val": sim("val", spec, clf)}
    if config.protocol_val_runs:
        val_sets["protocol"] = sim("protocol", PROTOCOL_RUNS, clf)
    if progress is not None:
        progress("validate", 0, 1, {})
    for which, objs in val_sets.items():
        called = objs.model
        metrics[which] = {
            "seeds": config.seeds(which),
            "model": event_scores(objs, called),
            "threshold_detector": event_scores(objs, objs.threshold),
            "dead_objects": int((objs.state == 2).sum()),
            "dead_flagged": int(((objs.state == 2) & called).sum()),
            "no_cell_objects": int((objs.state < 0).sum()),
            "no_cell_flagged": int(((objs.state < 0) & called).sum()),
        }
    # test crops for the package: the mitotic and some other objects of a
    # validation run
    v = val_sets["val"]
    pick = np.concatenate(
        [np.flatnonzero(v.mitotic)[:4], np.flatnonzero(v.state == 2)[:2]]
    )
    pick = np.concatenate([pick, np.flatnonzero(v.state == 0)[: 8 - len(pick)]])
    card = ClassifierCard(
        width=config.width,
        crop=crop,
        threshold=best_threshold,
        training={
            "data": _data_text(config),
            "command": command,
            "seeds": {k: config.seeds(k) for k in ("train", "tune")},
            "objects": len(train_set),
            "mitotic_objects": int(train_set.mitotic.sum()),
            "dead_objects": int((train_set.state == 2).sum()),
            "no_cell_objects": int((train_set.state < 0).sum()),
            "tuning": "best step and probability threshold (F1 per frame) on the "
            "tuning runs",
            "config": config.model_dump(mode="json"),
        },
        validation={
            **metrics,
            "definitions": (
                "per frame: every segmented object against the truth state of the "
                "cell under it; per event: an event is one mitosis of a truth cell, "
                "captured if flagged at >= 1 frame while mitotic (event_recall); a "
                "detection is a run of consecutive flagged time points of one track, "
                "true if any of them is mitotic (event_precision)"
            ),
        },
    )
    return MitosisTrainResult(
        config=config,
        network=net,
        card=card,
        test_crops=v.crops[pick],
        history=history,
        metrics=metrics,
        seconds=time.perf_counter() - t_start,
    )


DESCRIPTION = (
    "Mitosis classifier: a small CNN on nucleus crops (signal over the frame's and "
    "over the track's reference nucleus, the object's mask and area ratio) giving "
    "the probability that a segmented nucleus is mitotic."
)


def _table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| validation runs | detector | per-frame precision | per-frame recall | "
        "per-event precision | per-event recall | events | objects (mitotic) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for which, m in metrics.items():
        seeds = m["seeds"]
        label = {"val": "training-like", "protocol": "event protocol (6 h)"}[which]
        for det in ("model", "threshold_detector"):
            s = m[det]
            lines.append(
                f"| {label}, seeds {seeds[0]}-{seeds[-1]} | "
                f"{'mitosis-clf' if det == 'model' else 'threshold rule'} | "
                f"{s['frame_precision']} | {s['frame_recall']} | "
                f"{s['event_precision']} | {s['event_recall']} | "
                f"{s['events_captured']}/{s['events']} | "
                f"{s['objects']} ({s['mitotic_objects']}) |"
            )
    return lines


def write_mitosis_model(
    result: MitosisTrainResult, out: str | Path, *, name: str | None = None
) -> Path:
    """Write the model folder (weights, ``rdf.yaml``, test tensors, cover),
    ``README.md`` (the model card) and ``qc/metrics.json``, ``qc/history.json``."""
    out = Path(out)
    name = name or out.name
    save_classifier(
        result.network,
        result.card,
        out,
        name=name,
        description=DESCRIPTION,
        test_crops=result.test_crops,
    )
    qc = out / "qc"
    qc.mkdir(exist_ok=True)
    (qc / "metrics.json").write_text(json.dumps(result.metrics, indent=1))
    (qc / "history.json").write_text(json.dumps(result.history, indent=1))
    write_readme(result, out, name=name)
    return out


def write_readme(result: MitosisTrainResult, out: Path, *, name: str) -> Path:
    """Write ``out/README.md``, the model card a person reads."""
    c, tr = result.card, result.card.training
    lines = [
        f"# {name}",
        "",
        DESCRIPTION,
        "",
        "Used by `smartscope.analysis.mitosis.MitosisDetector` with "
        "`method: model` (e.g. in `protocols/event_mitosis.yaml`: "
        "`detector: {method: model, model: mitosis-clf}` under the `event_rate` "
        "reaction).",
        "",
        "## Input and output",
        "",
        f"- one crop per segmented object (area >= {c.crop.min_area_um2} µm²): a "
        f"{c.crop.crop_um} µm window around its centroid resampled (bilinear) to "
        f"{c.crop.crop_px} x {c.crop.crop_px} px, so any objective gives the same "
        "scale;",
        "- channel `signal`: (raw frame - background) / the frame's median nucleus "
        "signal (median over the frame's objects of mean intensity - background), "
        "so exposure, power and bleaching divide out;",
        "- channel `mask`: 1 on the object's own pixels (which nucleus of the "
        "window is meant; its size and shape), 0 elsewhere in the frame, -1 "
        "outside it (a nucleus cut by the frame's edge is seen as cut);",
        "- channel `track`: (raw frame - background) / the track's reference "
        "signal: a running mean (weight 0.3) of the track's mean intensity over "
        "its first sighting and its frames not called mitotic (the frame's median "
        "nucleus before the first), as the threshold rule keeps it; so a nucleus "
        "reads about 1 against its own past, about 2.2 when it condenses;",
        "- channel `area`: the object's area / the track's reference area (the "
        "same running mean over its frames not called mitotic and not touching "
        "the frame's edge; a constant plane, clipped to 0-4): a pyknotic dead "
        "nucleus shrinks to about a third, a mitotic one to about two thirds;",
        f"- output: the probability that the object is mitotic; mitotic above "
        f"{c.threshold} (chosen on the tuning runs).",
        "- network: 4 conv blocks (3x3, BatchNorm, ReLU; 2 max-pools), global mean "
        f"and max pooling, one linear layer; width {c.width}; "
        f"{sum(p.numel() for p in result.network.parameters()):,} parameters. All "
        "objects of a frame run as one batch.",
        "",
        "The track references are state: in training they follow the truth "
        "(teacher forcing), in validation and in a run the classifier's own calls "
        "(after its first sighting, an object with a probability of at least half "
        "the threshold does not update its track's reference), as in "
        "`smartscope.analysis.mitosis.MitosisDetector`.",
        "",
        "## Training data",
        "",
        str(tr.get("data", "")),
        "",
        f"- objects: {tr.get('objects')} ({tr.get('mitotic_objects')} mitotic, "
        f"{tr.get('dead_objects')} dead, {tr.get('no_cell_objects')} on no cell)",
        f"- seeds: training {_span(tr['seeds']['train'])}, tuning (best step, "
        f"threshold) {_span(tr['seeds']['tune'])}; validation below; none of the "
        "event protocol's report seeds (11, 12, 21-26, 201-203).",
        f"- reproduce: `{tr.get('command', '')}` ({result.seconds / 60:.1f} min on "
        "2 CPU cores, simulation included)",
        "",
        "## QC: validation on separate seeded runs",
        "",
        "Both detectors on the same segmented objects (the classical segmenter, "
        "diameter_um 12, as in the event protocol). Training-like runs: seeds "
        "drawn as the training data; event protocol runs: the scene "
        "`mitosis_sparse`, 5 mW x 40 ms, 3 fields every 5 min for 6 h "
        "(`smartscope.nn.mitosis_data.PROTOCOL_RUNS`).",
        "",
        *_table(result.metrics),
        "",
        str(result.card.validation.get("definitions", "")),
        "",
        "Negatives: "
        + "; ".join(
            f"{k}: {m['dead_flagged']} of {m['dead_objects']} dead objects and "
            f"{m['no_cell_flagged']} of {m['no_cell_objects']} objects on no cell "
            "flagged"
            for k, m in result.metrics.items()
        )
        + ".",
        "",
        "Numbers: `qc/metrics.json`; the tuning curve: `qc/history.json`.",
        "",
        "## As a bioimage.io package",
        "",
        "- input `crops`: (batch, channel, y, x) float32, channels `signal`, "
        f"`mask`, `track`, `area`, {c.crop.crop_px} x {c.crop.crop_px}; made by "
        "`smartscope.nn.mitosis_model.frame_inputs` (no pre-processing to "
        "declare: the crops are already normalised).",
        "- output `probability`: (batch, channel) float32, one channel `mitosis`, "
        "after the declared `sigmoid`.",
        "- weights: `pytorch_state_dict` (`smartscope.nn.mitosis_model.MitosisNet`, "
        "needs smartscope installed).",
        "- `test_input.npy` / `test_output.npy`: 8 validation crops and the "
        "probabilities the network gives them.",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def _span(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
