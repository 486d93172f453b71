"""The shipped mitosis classifier (``models/mitosis-clf``): it loads, calls
mitotic nuclei against the simulator's truth on runs it was not trained or
tuned on, plugs into the mitosis detector and the event protocol, refuses bad
models by name, and ``smartscope train mitosis`` trains one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from smartscope.analysis.mitosis import (  # noqa: E402
    MitosisDetector,
    MitosisDetectorSettings,
)
from smartscope.nn import load_model  # noqa: E402
from smartscope.nn.cli import train_app  # noqa: E402
from smartscope.nn.locate import check_model_files  # noqa: E402
from smartscope.nn.mitosis_data import RunSpec, simulate_objects  # noqa: E402
from smartscope.nn.mitosis_model import (  # noqa: E402
    MitosisClassifier,
    load_classifier,
)
from smartscope.nn.mitosis_train import event_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: a short run with many mitoses: a dense, fast-cycling culture; seed 7100
#: is none of the model's training (1000-1023), tuning (2000-2003) or
#: validation (5200-5205, 6200-6204) seeds
SAMPLE = RunSpec(
    density_per_mm2=(350.0, 400.0),
    cycle_h_mean=(5.0, 6.0),
    mitosis_min=(35.0, 40.0),
    lethal_share=0.0,
    time_points=6,
)
SAMPLE_SEED = 7100
#: per frame, on that sample (the validation runs in the card: 0.95-1.0)
BAR = 0.85


@pytest.fixture(scope="module")
def sample():
    """The sample's objects and the classifier's calls, its track references
    following its own calls as in a run."""
    return simulate_objects(
        [SAMPLE_SEED], SAMPLE, classifier=load_classifier("mitosis-clf")
    )


def test_the_shipped_classifier_loads_by_name() -> None:
    files = check_model_files("mitosis-clf")
    assert files.kind == "event"
    clf = load_classifier("mitosis-clf")
    assert isinstance(clf, MitosisClassifier)
    assert 0 < clf.card.threshold < 1
    # load_model gives the same thing (every shipped model loads through it)
    model = load_model("mitosis-clf", device="cpu")
    assert isinstance(model, MitosisClassifier)
    assert model.kind == "event"
    folder = Path(model.path)
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 1 << 20
    # the package's test tensors are what the network gives
    x = np.load(folder / "test_input.npy")
    y = np.load(folder / "test_output.npy")
    np.testing.assert_allclose(clf.predict_crops(x), y[:, 0], atol=1e-5)


def test_per_frame_precision_and_recall_on_an_unseen_seed(sample) -> None:
    assert sample.mitotic.sum() >= 10, "the sample should hold mitoses"
    s = event_scores(sample, sample.model)
    assert s["frame_precision"] >= BAR, s
    assert s["frame_recall"] >= BAR, s
    assert s["event_recall"] >= BAR, s


def test_the_detector_with_the_model_calls_mitotic_nuclei_over_time() -> None:
    """End to end at one position: the analysis pipeline's objects, then the
    detector with ``method: model`` (its track references following its own
    calls, as in a run) against the truth."""
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.result import FrameInput
    from smartscope.analysis.settings import AnalysisSettings
    from smartscope.hardware import load_core, release_core
    from smartscope.nn.mitosis_data import _cells_of, _preset
    from smartscope.sim import get_simulator

    analyser = FrameAnalyser(AnalysisSettings(diameter_um=12), device="cpu")
    det = MitosisDetector(MitosisDetectorSettings(method="model"))
    tp = fp = fn = 0
    core = load_core(seed=SAMPLE_SEED, time_mode="virtual")
    try:
        sim = get_simulator(core)
        rng = np.random.default_rng(SAMPLE_SEED)
        sim.reset(seed=SAMPLE_SEED, preset=_preset(SAMPLE, rng))
        core.setConfig("Objective", "10x")
        core.setConfig("Channel", "DAPI")
        core.setProperty("Laser", "Power_mW", 5.0)
        core.setExposure(40.0)
        core.setXYPosition(0.0, 0.0)
        for i in range(4):
            core.setPosition(sim.focus_z_um())
            core.snapImage()
            image = np.asarray(core.getImage(), np.uint16).copy()
            truth = sim.truth()
            frame = FrameInput(
                image=image,
                frame_index=i,
                position="a",
                stage_x_um=0.0,
                stage_y_um=0.0,
                z_um=0.0,
                pixel_size_um=truth.pixel_size_um,
                exposure_ms=40.0,
                t_frame=0.0,
                t_s=truth.t_s,
            )
            result = analyser.analyse(frame)
            found = det.update(
                result.objects,
                background=result.background,
                image=image,
                labels=result.labels,
                pixel_size_um=truth.pixel_size_um,
            )
            cells = _cells_of(result.labels, truth.labels, int(result.labels.max()))
            state = {c.id: c.state for c in truth.cells}
            mitotic = {
                o.label
                for o in result.objects
                if state.get(int(cells[o.label - 1])) == "mitosis" and o.area_um2 >= 20
            }
            called = {o.label for o in found}
            tp += len(called & mitotic)
            fp += len(called - mitotic)
            fn += len(mitotic - called)
            sim.advance(300.0)
    finally:
        release_core(core)
    assert tp + fn >= 5, "the sample should hold mitoses"
    assert tp / (tp + fp) >= BAR, (tp, fp, fn)
    assert tp / (tp + fn) >= BAR, (tp, fp, fn)
    with pytest.raises(ValueError, match="needs the frame's image"):
        det.update(result.objects, background=result.background)


def test_bad_mitosis_models_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no-such-model"):
        MitosisDetectorSettings(method="model", model="no-such-model")
    with pytest.raises(ValidationError, match=r"denoise model.*mitosis-clf"):
        MitosisDetectorSettings(method="model", model="denoise-care")
    broken = tmp_path / "broken-clf"
    shutil.copytree(ROOT / "models" / "mitosis-clf", broken)
    (broken / "weights.pt").write_bytes(b"not a model")
    with pytest.raises(ValidationError, match=r"broken-clf.*weights"):
        MitosisDetectorSettings(method="model", model=str(broken))
    # the threshold rule never looks at the model field
    assert MitosisDetectorSettings(model="no-such-model").method == "threshold"


def test_the_event_protocol_takes_the_model_detector(tmp_path: Path) -> None:
    from smartscope.protocol import ProtocolError, load_protocol

    text = (ROOT / "protocols" / "event_mitosis.yaml").read_text()
    assert "    max_event_s: 1800\n" in text
    good = tmp_path / "em-model.yaml"
    good.write_text(
        text.replace(
            "    max_event_s: 1800\n",
            "    max_event_s: 1800\n    detector: {method: model, model: mitosis-clf}\n",
        )
    )
    proto = load_protocol(good)
    (reaction,) = proto.reactions
    assert reaction.build().params.detector.method == "model"
    bad = tmp_path / "em-bad.yaml"
    bad.write_text(
        text.replace(
            "    max_event_s: 1800\n",
            "    max_event_s: 1800\n    detector: {method: model, model: nope-clf}\n",
        )
    )
    with pytest.raises(ProtocolError, match="nope-clf"):
        load_protocol(bad)


def test_train_mitosis_refuses_overlapping_or_reserved_seeds(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "m"
    r = runner.invoke(
        train_app, ["mitosis", "--out", str(out), "--val-seed", "1003", "--steps", "2"]
    )
    assert r.exit_code == 2
    assert "overlap" in r.output
    r = runner.invoke(
        train_app, ["mitosis", "--out", str(out), "--train-seed", "20", "--steps", "2"]
    )
    assert r.exit_code == 2
    assert "report seeds" in r.output
    r = runner.invoke(train_app, ["mitosis", "--steps", "2"])
    assert r.exit_code == 2  # --out is required: never into models/ by default
    assert not out.exists()


@pytest.mark.slow
def test_train_mitosis_cli_tiny_run_writes_a_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny-clf"
    r = CliRunner().invoke(
        train_app,
        [
            "mitosis",
            "--out",
            str(out),
            "--steps",
            "4",
            "--val-every",
            "2",
            "--batch",
            "16",
            "--train-runs",
            "1",
            "--train-seed",
            "1000",
            "--tune-runs",
            "1",
            "--tune-seed",
            "1001",
            "--val-runs",
            "1",
            "--val-seed",
            "1002",
            "--protocol-val-runs",
            "0",
            "--time-points",
            "4",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "per frame P/R" in r.output
    for f in ("rdf.yaml", "weights.pt", "README.md", "qc/metrics.json", "cover.png"):
        assert (out / f).is_file(), f
    clf = load_classifier(out)
    assert clf.card.training["seeds"]["train"] == [1000]
    assert check_model_files(out).kind == "event"
