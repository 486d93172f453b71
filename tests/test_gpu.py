"""GPU paths (``-m gpu``; skipped where CUDA is absent): the models on CUDA
agree with the CPU, and the controller runs its analysis there.

No timing is asserted: GPU speed is measured with ``smartscope bench`` and
``benchmarks/bench_models.py`` on a GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _frame() -> np.ndarray:
    from smartscope.hardware import load_core, release_core

    core = load_core(seed=4)
    try:
        core.snapImage()
        return np.asarray(core.getImage()).copy()
    finally:
        release_core(core)


def test_segmenter_on_cuda_matches_cpu() -> None:
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    image = _frame()
    cpu = load_model("nuclei-seg", device="cpu").predict(image)
    gpu = load_model("nuclei-seg", device="cuda").predict(image)  # bfloat16 autocast
    assert gpu.dtype == np.int32
    assert gpu.shape == image.shape
    assert average_precision(cpu, gpu, thresholds=(0.5,))[0.5] >= 0.95


def test_denoiser_on_cuda_matches_cpu() -> None:
    from smartscope.nn import load_model

    image = _frame()
    cpu = load_model("denoise-care", device="cpu").predict(image)
    gpu = load_model("denoise-care", device="cuda").predict(image)
    assert gpu.dtype == np.float32
    scale = float(cpu.max() - cpu.min())
    assert np.abs(gpu - cpu).mean() < 0.02 * scale


def test_controller_analyses_on_cuda(tmp_path: Path) -> None:
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    proto = Protocol.model_validate(
        {
            "name": "gpu",
            "sequence": {"time_plan": {"interval": 10, "loops": 5}},
            "analysis": {
                "segmenter": "model",
                "model": "nuclei-seg",
                "denoise": "denoise-care",
            },
        }
    )
    core = load_core()
    try:
        summary = Controller(core, proto, out_dir=tmp_path / "run", device="cuda").run()
    finally:
        release_core(core)
    assert summary["frames_analysed"] == 5


def test_device_path_is_the_default_on_cuda() -> None:
    """On CUDA the frame stays on the card from normalisation to labels
    (``on_device``), and its labels agree with the CPU's host path, also
    for a 2048² frame predicted in tiles."""
    from smartscope.bench_scaling import demo_frame
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    gpu = load_model("nuclei-seg", device="cuda")
    cpu = load_model("nuclei-seg", device="cpu", precision="float32")
    assert gpu.on_device
    assert not cpu.on_device
    for size in (512, 2048):
        image = demo_frame(size)
        want = cpu.predict(image, diameter_px=18.2)
        got = gpu.predict(image, diameter_px=18.2)
        assert got.dtype == np.int32
        assert got.shape == image.shape
        assert average_precision(want, got, thresholds=(0.5,))[0.5] >= 0.95


def test_device_labels_on_cuda_match_the_cpu() -> None:
    """The torch post-processing gives the same labels on CUDA as on the CPU
    (it is deterministic: integer spreading, no atomics)."""
    from smartscope.nn import load_model
    from smartscope.nn.device_labels import labels_from_maps_t

    image = _frame()
    fg, dist = load_model("nuclei-seg", device="cpu").maps(image, diameter_px=18.2)
    fg_t, dist_t = torch.from_numpy(fg), torch.from_numpy(dist)
    want = labels_from_maps_t(fg_t, dist_t, min_size_px=20)
    got = labels_from_maps_t(fg_t.cuda(), dist_t.cuda(), min_size_px=20)
    assert got.device.type == "cuda"
    assert torch.equal(got.cpu(), want)


def test_frames_cross_to_cuda_pinned_as_16_bits() -> None:
    from smartscope.nn import load_model

    model = load_model("denoise-care", device="cuda")
    image = _frame()
    image[0, :3] = (0, 40000, 65535)  # above int16's range too
    t = model.predictor.to_device(image)
    assert t.device.type == "cuda"
    assert t.dtype == torch.int32
    back = model.predictor.to_host(t)
    np.testing.assert_array_equal(back, image)


def test_a_2048_frame_runs_in_one_piece_on_cuda(monkeypatch) -> None:
    """On a GPU a 2048² frame goes through each network in one piece (no
    tiles: a tile is a launch of every kernel again), the segmenter's
    rescaled to its training diameter too, and gives the CPU's tiled
    labels; the denoised frame is not sent to the card again (its twin)."""
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    image = np.tile(_frame(), (4, 4))
    cpu = load_model("nuclei-seg", device="cpu").predict(image, diameter_px=18.2)
    gpu = load_model("nuclei-seg", device="cuda")
    denoiser = load_model("denoise-care", device="cuda")

    def no_tiles(x):
        raise AssertionError(f"tiled a {tuple(x.shape)} input on CUDA")

    uploads = []
    real = gpu.predictor.to_device
    monkeypatch.setattr(gpu.predictor, "_run_tiled", no_tiles)
    monkeypatch.setattr(denoiser.predictor, "_run_tiled", no_tiles)
    monkeypatch.setattr(
        gpu.predictor, "to_device", lambda a: uploads.append(a.shape) or real(a)
    )
    got = gpu.predict(image, diameter_px=18.2)
    assert got.shape == image.shape
    assert average_precision(cpu, got, thresholds=(0.5,))[0.5] >= 0.95
    uploads.clear()
    denoised = denoiser.predict(image)
    labels = gpu.predict(denoised, diameter_px=18.2)
    assert uploads == []
    again = gpu.predict(denoised.copy(), diameter_px=18.2)  # sent: the same input
    assert average_precision(again, labels, thresholds=(0.9,))[0.9] >= 0.99


# ------------------------------------------------------------- CUDA graphs


def _normalised(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).cuda()


def test_networks_replay_cuda_graphs_with_the_networks_values() -> None:
    """On CUDA each network's call replays the graph recorded for its input
    shape (the default), and gives what launching the kernels one by one
    gives: the denoised frame and the labels."""
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    image = _frame()
    replayed = {n: load_model(n, device="cuda") for n in ("denoise-care", "nuclei-seg")}
    launched = {n: load_model(n, device="cuda") for n in ("denoise-care", "nuclei-seg")}
    for model in launched.values():
        model.predictor.cuda_graphs = False
    for name, model in replayed.items():
        assert model.predictor.uses_cuda_graphs, name
        assert not launched[name].predictor.uses_cuda_graphs
    want = launched["denoise-care"].predict(image)
    for _ in range(3):  # the first call launches, the second records
        got = replayed["denoise-care"].predict(image)
        scale = float(want.max() - want.min())
        assert np.abs(got - want).max() < 0.01 * scale
    assert replayed["denoise-care"].predictor.recorded_shapes == [(1, 1, *image.shape)]
    assert launched["denoise-care"].predictor.recorded_shapes == []
    want_labels = launched["nuclei-seg"].predict(want, diameter_px=18.2)
    for _ in range(3):
        got_labels = replayed["nuclei-seg"].predict(want, diameter_px=18.2)
        ap = average_precision(want_labels, got_labels, thresholds=(0.9,))[0.9]
        assert ap >= 0.95
    for model in replayed.values():
        assert model.predictor.graphs_failed is None
        assert len(model.predictor.recorded_shapes) == 1


def test_a_replayed_output_is_the_callers_own() -> None:
    """The next replay writes the graph's output buffer again; what a call
    returned (a denoised frame kept for the segmenter, a batch's maps) must
    not change with it."""
    from smartscope.nn import load_model

    p = load_model("denoise-care", device="cuda").predictor
    a, b = _normalised(1, (256, 256)), _normalised(2, (256, 256))
    p.run_t(a)
    p.run_t(a)  # the shape's second call records
    assert p.recorded_shapes == [(1, 1, 256, 256)]
    first = p.run_t(a)
    kept = first.clone()
    second = p.run_t(b)
    assert torch.equal(first, kept)
    assert not torch.allclose(first, second)
    p.cuda_graphs = False
    _close(first, p.run_t(a))
    _close(second, p.run_t(b))


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Within 1% of the output's range (bfloat16)."""
    scale = float(want.max() - want.min())
    assert float((got - want).abs().max()) < 0.01 * scale


def test_each_batch_size_and_frame_size_gets_its_graph(monkeypatch) -> None:
    """A batch of three and single frames of two sizes: three graphs, each
    output what the kernels launched one by one give on the same input; the
    graphs of one frame size share their buffers; past ``MAX_CUDA_GRAPHS``
    the graph used longest ago goes."""
    from smartscope.nn import load_model
    from smartscope.nn import predictor as predictor_module

    p = load_model("denoise-care", device="cuda").predictor
    launched = load_model("denoise-care", device="cuda").predictor
    launched.cuda_graphs = False
    batch = torch.stack([_normalised(s, (256, 256)) for s in range(3)])
    p.run_t(batch)  # a shape's first call launches its kernels
    assert p.recorded_shapes == []
    together = p.run_t(batch)  # its second records
    _close(together, launched.run_t(batch))
    for _ in range(2):
        for i in range(3):
            _close(p.run_t(batch[i]), launched.run_t(batch[i]))
    other = _normalised(4, (128, 192))
    p.run_t(other)
    _close(p.run_t(other), launched.run_t(other))
    assert p.recorded_shapes == [(3, 1, 256, 256), (1, 1, 256, 256), (1, 1, 128, 192)]
    same_size = [r for key, r in p._graphs.items() if key[0][2:] == (256, 256)]
    assert len(same_size) == 2
    assert same_size[0].buffers is same_size[1].buffers
    monkeypatch.setattr(predictor_module, "MAX_CUDA_GRAPHS", 2)
    small = _normalised(5, (96, 96))
    p.run_t(small)
    p.run_t(small)
    assert p.recorded_shapes == [(1, 1, 128, 192), (1, 1, 96, 96)]
    assert p.graphs_failed is None
    p.cuda_graphs = False  # turned off: the graphs and their memory go
    p.run_t(small)
    assert p.recorded_shapes == []


_FAILED_CAPTURE = """
import json, logging, sys
import torch
from smartscope.nn import load_model
from smartscope.nn.predictor import Predictor

warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("smartscope.nn.predictor").addHandler(Keep(logging.WARNING))

class Syncing(torch.nn.Module):
    # reads a value back to the host mid-call, which a CUDA graph cannot hold
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    def forward(self, x):
        y = self.conv(x)
        return y * (1.0 if float(y.mean()) > -1e9 else 0.0)

net = Syncing()
p = Predictor(net, size_multiple=1, device="cuda", precision="float32", cuda_graphs=True)
x = torch.rand(64, 64, generator=torch.Generator().manual_seed(3)).cuda()
got = [p.run_t(x) for _ in range(3)]  # the second call records, and fails
with torch.inference_mode():
    want = net(x[None, None].contiguous(memory_format=torch.channels_last))[0]
unet = load_model("denoise-care", device="cuda").predictor
launched = load_model("denoise-care", device="cuda").predictor
launched.cuda_graphs = False
y = torch.rand(128, 128, generator=torch.Generator().manual_seed(4)).cuda()
after = [unet.run_t(y) for _ in range(3)]
print(json.dumps({
    "failed": p.graphs_failed,
    "uses": p.uses_cuda_graphs,
    "recorded": p.recorded_shapes,
    "warnings": [w for w in warnings if "CUDA graphs off" in w],
    "default_stream": torch.cuda.current_stream() == torch.cuda.default_stream(),
    "same": [bool(torch.equal(g, want)) for g in got],
    "unet_uses": unet.uses_cuda_graphs,
    "unet_recorded": unet.recorded_shapes,
    "unet_same": [bool(torch.allclose(a, launched.run_t(y), atol=0.02)) for a in after],
}))
"""


def test_a_network_a_graph_cannot_hold_runs_launched() -> None:
    """Recording (at the shape's second call) fails midway, a host read
    mid-call: one warning, every call, the failed one included, gives the
    network's own values, the capture's stream is not left current, and no
    network of the process records again (torch without
    pytorch/pytorch#180395 leaves its allocator mid-capture), so a U-Net then launches its
    kernels, with the same values. In a process of its own, since the
    failure is for the whole process."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FAILED_CAPTURE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["failed"]
    assert not r["uses"]
    assert r["recorded"] == []
    assert len(r["warnings"]) == 1
    assert "every network of this process" in r["warnings"][0]
    assert r["default_stream"]
    assert r["same"] == [True, True, True]
    assert not r["unet_uses"]
    assert r["unet_recorded"] == []
    assert r["unet_same"] == [True, True, True]


def test_two_threads_record_and_replay_at_once() -> None:
    """The two analysis stages each record their own model's graphs on their
    own thread, one possibly while the other predicts (its steps timed:
    synchronised, which must not be device-wide while the other records):
    both stay right."""
    import threading

    from smartscope.bench_scaling import demo_frame
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    names = ("denoise-care", "nuclei-seg")
    models = [load_model(n, device="cuda") for n in names]
    launched = [load_model(n, device="cuda") for n in names]
    for m in launched:
        m.predictor.cuda_graphs = False
    # two frame sizes (the simulated camera's are 256 to 2048 px)
    images = [demo_frame(256), np.ascontiguousarray(demo_frame(512)[:320, :384])]
    kw = [{}, {"diameter_px": 18.2}]
    outputs: dict[int, list[np.ndarray]] = {0: [], 1: []}
    errors: list[BaseException] = []

    # each thread's first CUDA work (its cuDNN and cuBLAS handles, the
    # kernels' first launches) before the other records, as the pipeline's
    # stages warm up in turn on a GPU
    start = threading.Barrier(2)
    first = np.ascontiguousarray(images[0][:128, :128])

    def work(i: int) -> None:
        try:
            models[i].predict(first, **kw[i])
            start.wait(120)
            for _ in range(3):
                for image in images:
                    outputs[i].append(models[i].predict(image, **kw[i]))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    for i, model in enumerate(models):
        assert model.predictor.graphs_failed is None
        assert len(model.predictor.recorded_shapes) == 2
        for k, image in enumerate(images):
            want = launched[i].predict(image, **kw[i])
            for rep in range(3):
                got = outputs[i][rep * len(images) + k]
                if i == 0:
                    scale = float(want.max() - want.min())
                    assert np.abs(got - want).max() < 0.01 * scale
                else:
                    ap = average_precision(want, got, thresholds=(0.9,))[0.9]
                    assert ap >= 0.95


def test_the_analysis_records_its_batches_in_the_warm_up(tmp_path: Path) -> None:
    """``batch_frames: 3`` on CUDA: the warm-up records every batch size's
    graphs before the first frame (each size's second call); ``cuda_graphs:
    false`` records none."""
    from smartscope.analysis import AnalysisSettings
    from smartscope.analysis.analyser import FrameAnalyser

    for graphs in (True, False):
        analyser = FrameAnalyser(
            AnalysisSettings(
                denoise="denoise-care",
                segmenter="model",
                model="nuclei-seg",
                batch_frames=3,
                cuda_graphs=graphs,
            ),
            device="cuda",
        )
        analyser.warm_up((256, 256), pixel_size_um=0.65)
        denoiser = analyser._denoiser.predictor
        assert denoiser.cuda_graphs is (None if graphs else False)
        assert denoiser.uses_cuda_graphs is graphs
        want = [(n, 1, 256, 256) for n in (1, 2, 3)] if graphs else []
        assert denoiser.recorded_shapes == want
        assert (len(analyser._segmenter.predictor.recorded_shapes) == 3) is graphs


def test_the_measurements_on_cuda_are_the_hosts() -> None:
    """The area filter and the measurements on the card (2048², a batch of
    two: float64 sums by atomics, in no fixed order) against the host's
    filter and measurements of the same labels; and through the analysis
    on CUDA the segmenter copies nothing over (the raw frame is the
    denoiser's) and its objects are the host's measurements of its
    labels."""
    from smartscope.analysis import AnalysisSettings, filter_by_area, measure_objects
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.measure import object_stats
    from smartscope.analysis.measure_device import filter_and_measure_t
    from smartscope.bench_scaling import demo_frame, demo_frame_input
    from smartscope.nn import load_model

    image = demo_frame(2048)
    labels = load_model("nuclei-seg", device="cpu").predict(image, diameter_px=18.2)
    shifted = np.roll(labels, 300, axis=1)
    lab_t = torch.from_numpy(np.stack([labels, shifted])).cuda()
    img_t = torch.from_numpy(np.stack([image, image]).astype(np.int32)).cuda()
    out, stats = filter_and_measure_t(lab_t, img_t, min_px=150, max_px=900.0)
    for i, lab in enumerate((labels, shifted)):
        want = filter_by_area(
            lab, pixel_size_um=1.0, min_area_um2=150, max_area_um2=900
        )
        np.testing.assert_array_equal(out[i].cpu().numpy(), want)
        ref = object_stats(want, image)
        for name in ref.__dataclass_fields__:
            np.testing.assert_allclose(
                getattr(stats[i], name), getattr(ref, name), rtol=1e-9, atol=1e-9
            )
    analyser = FrameAnalyser(
        AnalysisSettings(denoise="denoise-care", segmenter="model", model="nuclei-seg"),
        device="cuda",
    )
    analyser.load_models()
    assert analyser._measures_on_device()
    uploads = []
    real = analyser._segmenter.predictor.to_device
    analyser._segmenter.predictor.to_device = lambda a, real=real: (
        uploads.append(a.shape) or real(a)
    )
    frame = demo_frame_input(image, 0)
    result = analyser.analyse(frame)
    assert result.error is None
    assert uploads == []
    assert len(result.objects) > 100
    table = measure_objects(result.labels, image, frame)
    np.testing.assert_array_equal([o.label for o in result.objects], table.label)
    np.testing.assert_allclose([o.x_um for o in result.objects], table.x_um, atol=1e-6)
    np.testing.assert_allclose(
        [o.mean_intensity for o in result.objects], table.mean_intensity, rtol=1e-9
    )
    np.testing.assert_allclose(
        [o.eccentricity for o in result.objects], table.eccentricity, atol=1e-9
    )


def test_images_no_result_keeps_stay_on_the_card() -> None:
    """A run that saves no images and whose reactions read none
    (``images_kept`` empty): on CUDA neither the denoised frames nor the
    labels are copied back (2 x 16 MB a 2048² frame), one frame at a time
    and in a batch, and the objects are those of an analysis that keeps
    both."""
    import dataclasses

    from smartscope.analysis import AnalysisSettings
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.bench_scaling import demo_frame, demo_frame_input

    settings = AnalysisSettings(
        denoise="denoise-care", segmenter="model", model="nuclei-seg"
    )
    analyser = FrameAnalyser(settings, device="cuda")
    analyser.load_models()
    analyser.images_kept = frozenset()
    calls = []
    for model in (analyser._denoiser, analyser._segmenter):
        real = model.predictor.to_host
        model.predictor.to_host = lambda t, real=real: calls.append(t.shape) or real(t)
    frame = demo_frame_input(demo_frame(2048), 0)
    frames = [frame, dataclasses.replace(frame, frame_index=1)]
    results = [analyser.analyse(frame), *analyser.analyse_batch(frames)]
    assert calls == []
    for r in results:
        assert r.error is None
        assert r.labels is None
        assert r.denoised is None
        assert len(r.objects) > 100
    both = FrameAnalyser(settings, device="cuda").analyse(frame)
    assert abs(len(both.objects) - len(results[0].objects)) <= 2
