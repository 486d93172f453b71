"""Running a network on images of any size: device, precision, tiling, warm-up.

A :class:`Predictor` owns one ``torch.nn.Module`` (or TorchScript module) in
eval mode on one device. ``run(x)`` takes a normalised ``(Y, X)`` float32
image, pads it to the network's size multiple, cuts frames larger than
``tile_px`` into overlapping tiles (keeping only each tile's centre, so no
seams where the receptive field is covered), and returns ``(C, Y, X)``
float32 on the CPU. Inference runs under ``torch.inference_mode`` and, on
CUDA, ``bfloat16`` autocast; on the CPU, with ``int8`` precision, an int8
copy of the network (ONNX, :mod:`smartscope.nn.quantize`) runs in ONNX
Runtime instead, with as many threads as torch is set to use. On CUDA the
network's kernels for each input shape are recorded once as a CUDA graph and
replayed (one launch for the whole network; see :class:`Predictor`'s
``cuda_graphs``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CUDA_CAPTURE_LOCK",
    "CUDA_TILE_PX",
    "DEFAULT_TILE_PX",
    "INT8_TILE_PX",
    "MAX_CUDA_GRAPHS",
    "OnnxRunner",
    "Predictor",
    "default_tile_px",
    "fuse_batchnorm",
    "resolve_device",
]

#: frames larger than this (either side) run in tiles, by default
DEFAULT_TILE_PX = 1024
#: the same for an int8 network in ONNX Runtime. It was 2048 (one piece up
#: to 2048 px) after nuclei-seg's int8 copy ran a 2048 x 2048 frame faster
#: whole (15.0x the 512 x 512 cost) than in 3 x 3 tiles (17.2x) on the AVX2
#: host of 2026-12-02; on the AVX-512 host of 2026-12-03 both int8 copies ran
#: it faster in tiles (denoise-care 317 ms against 582 whole, nuclei-seg 877
#: against 1200; benchmarks/bench_frame_size.py, docs/benchmarks.md), and
#: the mixed int8/float32 CARE copy, which came later, 2x faster, so tiles
#: start at the same size as for float32
INT8_TILE_PX = 1024
#: the same on a GPU. The CPU's tiles keep a tile's activations in its
#: caches; a GPU has no such gain and pays per launch instead: a 2048 x 2048
#: frame in 3 x 3 tiles launched each network kernel 9 times and ran 16%
#: more pixels (the overlaps), 420 kernels for denoise-care instead of 59
#: (benchmarks/device_ops.py). So a GPU runs in one piece any frame up to
#: 2560 px, the issue's largest frame (2048 px) after the segmenter rescales
#: it to its training diameter by up to 1.25x; a batch of 8 such frames
#: holds about 4 GB of bfloat16 activations
CUDA_TILE_PX = 2560

#: most input shapes (batch and frame size) a predictor keeps CUDA graphs
#: for; a further shape pushes out the one used longest ago. The graphs of
#: one predictor share one memory pool for their activations (about what
#: the largest shape needs, not their sum), and the graphs of one frame
#: size share one input and one output buffer, sized for the largest batch
#: (``graph_batch_frames``): by arithmetic, float32 in and out at 2048²,
#: batches of up to 8, 270 MB for a denoiser and, at the segmenter's
#: 2560² with two output channels, 630 MB
MAX_CUDA_GRAPHS = 16
#: input shapes a predictor remembers having seen once (a shape is recorded
#: at its second call, so images of ever new sizes, a dataset's, run eagerly
#: instead of each paying for a recording)
SEEN_SHAPES = 64
#: a replayed graph's output against the network's own on the same input,
#: checked once per recording (bfloat16 carries about 3 significant digits)
GRAPH_CHECK_TOLERANCE = 0.02

log = logging.getLogger(__name__)

#: held while a CUDA graph is recorded: torch allows one capture at a time
#: in a process (the two analysis stages each record their model's graphs
#: on their own thread), and code that may synchronise the whole device,
#: such as a kernel compiled and tuned on first use, holds it too, since a
#: device-wide sync during another thread's capture breaks that capture
CUDA_CAPTURE_LOCK = threading.Lock()
#: why CUDA graphs are off for every network of this process (None: they
#: are not): a capture that failed midway can leave torch's caching
#: allocator believing it still runs (torch releases without
#: pytorch/pytorch#180395 do not end the capture's allocation to its pool
#: when ending the capture fails; #190348 and #190308 leak its pool), so no
#: other capture is tried after one
_capture_broken: str | None = None

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "float32", "bfloat16", "int8"]


def default_tile_px(device: torch.device, precision: str) -> int:
    """The size from which a frame is predicted in tiles, by default, on
    ``device`` at ``precision``: :data:`CUDA_TILE_PX` on a GPU,
    :data:`INT8_TILE_PX` for int8, else :data:`DEFAULT_TILE_PX`."""
    if device.type == "cuda":
        return CUDA_TILE_PX
    return INT8_TILE_PX if precision == "int8" else DEFAULT_TILE_PX


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime (the int8 path) can be imported."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode ``Conv2d → BatchNorm2d`` pair into the convolution.

    Works on ``nn.Sequential`` children (the U-Net's blocks); returns the same
    module, changed in place. Prediction only: the result cannot be trained.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        names = list(child._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = child._modules[a], child._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                child._modules[a] = fuse_conv_bn_eval(conv, bn)
                child._modules[b] = nn.Identity()
    return module


class OnnxRunner:
    """An ONNX network (input ``x``: (B, 1, Y, X) float32) in ONNX Runtime's
    CPU provider, called like the torch network it stands for.

    One session per thread count, made on first use: each call uses
    ``torch.get_num_threads()`` intra-op threads, so the analysis' thread
    choice (:class:`smartscope.analysis.threads.ThreadTuner`) steers both
    runtimes. The threads do not spin while waiting for work: on a machine
    that also runs Micro-Manager, a viewer and a writer, spinning threads
    take the cores from them. No memory arena: with it, the four sessions of
    the demo's two models held 100 MB more after 120 frames, at the same
    speed without it (39 MB).
    """

    def __init__(self, model: bytes) -> None:
        import onnxruntime  # noqa: F401  (fail here, not at the first frame)

        self._model = model
        self._sessions: dict[int, Any] = {}
        self._input = "x"

    def _session(self, threads: int) -> Any:
        session = self._sessions.get(threads)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.enable_cpu_mem_arena = False
            session = ort.InferenceSession(
                self._model, options, providers=["CPUExecutionProvider"]
            )
            self._input = session.get_inputs()[0].name
            self._sessions[threads] = session
        return session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        session = self._session(max(1, torch.get_num_threads()))
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
        return torch.from_numpy(session.run(None, {self._input: arr})[0])


@dataclass(eq=False)
class _Buffers:
    """The input and output buffers the graphs of one frame size share
    (batches up to their first dimension), outside the graphs' pool."""

    x: torch.Tensor
    out: torch.Tensor | None = None


@dataclass
class _Recorded:
    """A network's kernels recorded for one input shape: replaying
    ``graph`` reads ``x`` and writes ``out`` (views of ``buffers``)."""

    graph: Any  # torch.cuda.CUDAGraph
    x: torch.Tensor
    out: torch.Tensor
    buffers: _Buffers


class Predictor:
    """One network, ready to predict.

    Parameters
    ----------
    network : torch.nn.Module or TorchScript module
        Maps (B, 1, Y, X) float32 to (B, C, Y, X).
    size_multiple : int
        Y and X fed to the network are padded up to a multiple of this.
    device : "auto", "cpu" or "cuda"
    precision : "auto", "float32", "bfloat16" or "int8"
        ``"auto"``: bfloat16 autocast on CUDA; on the CPU int8 when
        ``int8_onnx`` is given and ONNX Runtime is installed, else float32.
        ``"int8"`` needs both and the CPU.
    tile_px : int, optional
        Frames larger than this (either side) are predicted in tiles; default
        :func:`default_tile_px` (larger on a GPU).
    overlap_px : int
        Overlap between neighbouring tiles (half of it is discarded per side).
    int8_onnx : bytes, optional
        The network quantised to int8, as an ONNX model
        (:mod:`smartscope.nn.quantize`).
    cuda_graphs : bool, optional
        On CUDA, record the network's kernels for each input shape as a
        CUDA graph and replay it: one launch per call instead of one per
        kernel (about 60 per U-Net, plus autocast's casts), each a launch
        the host pays for in turn. The
        first call of a shape runs as without graphs and its second records
        (the network runs three times, the device is synchronised: the
        warm-up's job), so images of ever new sizes pay for no recording
        (and a model loader's single warm-up call records nothing: a
        setting made after loading is in effect before any recording); the
        replayed output is checked against the network's own once, and a
        shape whose recording fails or differs turns graphs off for this
        predictor (a capture that failed midway: for every network of the
        process), with a warning, and the kernels are launched one by one
        as before. ``None`` (the default): on for this project's U-Nets
        (:class:`~smartscope.nn.unet.UNet`), off for other networks (a
        foreign network may read values back or branch on them mid-call,
        which a graph cannot hold). Ignored on the CPU.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        size_multiple: int = 16,
        device: Device | str = "auto",
        precision: Precision = "auto",
        tile_px: int | None = None,
        overlap_px: int = 64,
        int8_onnx: bytes | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        on_cpu = self.device.type == "cpu"
        if precision == "auto":
            if not on_cpu:
                precision = "bfloat16"
            elif int8_onnx is not None and onnxruntime_available():
                precision = "int8"
            else:
                precision = "float32"
        if precision == "int8":
            if not on_cpu:
                raise ValueError("precision 'int8' runs on the CPU only")
            if int8_onnx is None:
                raise ValueError(
                    "precision 'int8' needs int8 weights (this model has none: "
                    "python -m smartscope.nn.quantize MODEL_FOLDER makes them)"
                )
            if not onnxruntime_available():
                raise ValueError(
                    "precision 'int8' needs ONNX Runtime: pip install onnxruntime"
                )
        self.precision: Precision = precision
        self.int8_onnx = int8_onnx
        if tile_px is None:
            tile_px = default_tile_px(self.device, precision)
        self.size_multiple = int(size_multiple)
        m = self.size_multiple
        self.tile_px = max(m, int(tile_px) // m * m)
        self.overlap_px = max(0, min(int(overlap_px), self.tile_px // 2) // 2 * 2)
        network.eval()
        from smartscope.nn.unet import UNet

        #: the network is one of this project's U-Nets (CUDA graphs by default)
        self.own_network = isinstance(network, UNet)
        if not isinstance(network, torch.jit.ScriptModule):
            network = fuse_batchnorm(network)
        # channels-last convolutions ran about 1.8x faster on the CPU here
        self.network = network.to(self.device, memory_format=torch.channels_last)
        #: inputs laid out channels-last like the network's weights
        self.channels_last = True
        self._onnx = OnnxRunner(int8_onnx) if precision == "int8" else None
        self._warm = False
        self.cuda_graphs = cuda_graphs
        #: the recorded graphs by input (shape, dtype), least recently used first
        self._graphs: OrderedDict[tuple[Any, ...], _Recorded] = OrderedDict()
        #: the shapes called once and not recorded yet, oldest first
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._graph_pool: Any = None
        self._graph_stream: Any = None
        #: the buffers of each frame size's graphs, while a graph uses them
        self._buffers: weakref.WeakValueDictionary[tuple[Any, ...], _Buffers] = (
            weakref.WeakValueDictionary()
        )
        #: the largest batch the graphs' buffers are sized for (the
        #: analysis' ``batch_frames``); a larger batch gets larger buffers
        self.graph_batch_frames = 1
        #: why graphs were turned off for this predictor (None: they were not)
        self.graphs_failed: str | None = None

    def use_int8(self, onnx_model: bytes) -> None:
        """Predict with this int8 ONNX copy of the network from now on (CPU,
        ONNX Runtime); what :mod:`smartscope.nn.quantize` scores candidates
        with."""
        if self.device.type != "cpu":
            raise ValueError("precision 'int8' runs on the CPU only")
        self._onnx = OnnxRunner(onnx_model)
        self.int8_onnx = onnx_model
        self.precision = "int8"

    def warm_up(self, shape: tuple[int, int] = (256, 256)) -> None:
        """Run once on zeros so the first real frame does not pay for set-up."""
        self.run(np.zeros(shape, np.float32))
        self._warm = True

    @property
    def wants_cuda_graphs(self) -> bool:
        """Whether the network's calls would replay CUDA graphs on CUDA:
        ``cuda_graphs``, or by default a U-Net of this project's, and a
        torch network (not ONNX Runtime's int8 copy)."""
        wanted = self.own_network if self.cuda_graphs is None else self.cuda_graphs
        return wanted and self._onnx is None

    @property
    def uses_cuda_graphs(self) -> bool:
        """Whether the network's calls are replayed from CUDA graphs (see
        ``cuda_graphs``): wanted, on CUDA, and no recording failed (of this
        predictor, or a capture of the process)."""
        return (
            self.device.type == "cuda"
            and self.wants_cuda_graphs
            and self.graphs_failed is None
            and _capture_broken is None
        )

    @property
    def recorded_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes (B, 1, Y, X) with a recorded CUDA graph, least
        recently used first."""
        return [key[0] for key in self._graphs]

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return self._onnx(batch)
        if self.uses_cuda_graphs:
            out = self._replayed(batch)
            if out is not None:
                return out
        elif self._graphs:  # turned off since: their memory goes
            self._graphs.clear()
            self._graph_pool = None
        return self._network_call(batch)

    def _network_call(self, batch: torch.Tensor, *, cache: bool = True) -> torch.Tensor:
        """The network on ``batch``, kernel by kernel (``cache``: autocast's
        cache of the weights' bfloat16 copies, which a graph being recorded
        must not use)."""
        if self.device.type == "cuda" and self.precision == "bfloat16":
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache):
                return self.network(batch).float()
        return self.network(batch)

    def _replayed(self, batch: torch.Tensor) -> torch.Tensor | None:
        """The network's output for ``batch`` from its shape's CUDA graph
        (recorded now at the shape's second call); None at its first call
        and where graphs are off from now on. The output is the caller's
        own: the graph's buffer is copied, as the next replay writes it
        again."""
        key = (tuple(batch.shape), batch.dtype)
        rec = self._graphs.get(key)
        if rec is None:
            if key not in self._seen:
                self._seen[key] = None
                while len(self._seen) > SEEN_SHAPES:
                    self._seen.popitem(last=False)
                return None
            del self._seen[key]
            rec = self._record(batch)
            if rec is None:
                return None
            self._graphs[key] = rec
            while len(self._graphs) > MAX_CUDA_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            rec.x.copy_(batch)
            rec.graph.replay()
        return rec.out.clone()

    def _record(self, batch: torch.Tensor) -> _Recorded | None:
        """Record the network's kernels on ``batch``'s shape as a CUDA graph
        and replay it once on ``batch`` (following torch's recipe: a few
        calls on a side stream first, so that cuDNN and cuBLAS set up outside
        the capture); its output is checked against the network's own. On
        any failure graphs are off for this predictor (``graphs_failed``),
        and where the capture itself failed, for the process."""
        global _capture_broken
        capturing = False
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream()
            try:
                with CUDA_CAPTURE_LOCK:
                    if self._graph_stream is None:
                        self._graph_stream = torch.cuda.Stream()
                    side = self._graph_stream
                    bufs = self._input_buffers(batch)
                    n = batch.shape[0]
                    x = bufs.x[:n]
                    x.copy_(batch)
                    side.wait_stream(caller)
                    with torch.cuda.stream(side):
                        for _ in range(3):  # as torch.cuda.make_graphed_callables
                            expected = self._network_call(x, cache=False)
                    caller.wait_stream(side)
                    if bufs.out is None or bufs.out.shape[1:] != expected.shape[1:]:
                        # outside the graphs' pool: no graph's scratch memory
                        size = (bufs.x.shape[0], *expected.shape[1:])
                        bufs.out = torch.empty(
                            size, dtype=expected.dtype, device=expected.device
                        )
                    out = bufs.out[:n]
                    graph = torch.cuda.CUDAGraph()
                    # thread_local: the other analysis stage may launch its
                    # own kernels meanwhile
                    capturing = True
                    with torch.cuda.graph(
                        graph,
                        pool=self._graph_pool,
                        stream=side,
                        capture_error_mode="thread_local",
                    ):
                        out.copy_(self._network_call(x, cache=False))
                    capturing = False
                    if self._graph_pool is None:
                        self._graph_pool = graph.pool()
                    graph.replay()
                    diff = float((out - expected).abs().max())
                    scale = 1.0 + float(expected.abs().max())
                    if not diff <= GRAPH_CHECK_TOLERANCE * scale:  # also NaN
                        raise RuntimeError(
                            f"the replayed graph's output differs from the "
                            f"network's by up to {diff:.4g} (scale {scale:.4g})"
                        )
                return _Recorded(graph=graph, x=x, out=out, buffers=bufs)
            except Exception as exc:
                self.graphs_failed = f"{type(exc).__name__}: {exc}"
                self._graphs.clear()
                self._graph_pool = None
                if capturing:
                    _capture_broken = self.graphs_failed
                log.warning(
                    "CUDA graphs off for %s (recording input shape %s failed: "
                    "%s); kernels are launched one by one",
                    "every network of this process" if capturing else "this network",
                    tuple(batch.shape),
                    self.graphs_failed,
                )
                return None
            finally:
                # a capture that failed may leave its stream current
                # (torch.cuda.graph's exit raises before it restores it)
                torch.cuda.set_stream(caller)

    def _input_buffers(self, batch: torch.Tensor) -> _Buffers:
        """The buffers of ``batch``'s frame size, large enough for its batch
        (new ones for ``graph_batch_frames`` or this batch, whichever is
        larger, where there are none yet or they are too small; the graphs
        recorded on the old ones keep them)."""
        key = (tuple(batch.shape[1:]), batch.dtype)
        bufs = self._buffers.get(key)
        if bufs is None or bufs.x.shape[0] < batch.shape[0]:
            n = max(batch.shape[0], self.graph_batch_frames)
            last = batch.ndim == 4 and batch.is_contiguous(
                memory_format=torch.channels_last
            )
            x = torch.empty(
                (n, *batch.shape[1:]),
                dtype=batch.dtype,
                device=batch.device,
                memory_format=torch.channels_last if last else torch.contiguous_format,
            )
            bufs = _Buffers(x=x)
            self._buffers[key] = bufs
        return bufs

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns to add below and right of an ``h`` x ``w`` input."""
        m = self.size_multiple
        return -h % m, -w % m

    def _run_padded(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Y, X) float32 → (B, C, Y, X) float32, on the device, padding
        as the network needs (reflected; repeated where the image is too
        small to reflect)."""
        h, w = x.shape[-2:]
        ph, pw = self._padding(h, w)
        t = x[:, None]
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            t = F.pad(t, (0, pw, 0, ph), mode=mode)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        out = self._forward(t.to(self.device))
        return out[:, :, :h, :w].float()

    def to_device(self, image: np.ndarray) -> torch.Tensor:
        """A host array on the predictor's device, with its values.

        It crosses in its own dtype (a uint16 frame at half the bytes of
        float32; as int16 bits, since torch's CUDA kernels do not all take
        uint16, widened to int32 on the device). On CUDA it is staged in
        page-locked memory and copied without blocking the host (torch's
        caching host allocator keeps the staging block until the copy is
        done); on the CPU a contiguous array is not copied (except to widen
        uint16).

        Returns
        -------
        Tensor on the device: the array's dtype, int32 for uint16, int64 for
        uint32 and uint64
        """
        a = np.ascontiguousarray(image)
        if not a.dtype.isnative:  # e.g. big-endian TIFF data: torch refuses it
            a = a.astype(a.dtype.newbyteorder("="))
        widen = a.dtype == np.uint16
        if widen:
            a = a.view(np.int16)
        elif a.dtype.kind == "u" and a.dtype.itemsize > 1:
            a = a.astype(np.int64)  # uint32/uint64: torch has no such dtypes
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            staged = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            staged.copy_(t)
            t = staged.to(self.device, non_blocking=True)
        if widen:
            t = t.to(torch.int32) & 0xFFFF
        return t

    def to_host(self, t: torch.Tensor) -> np.ndarray:
        """A device tensor as a host array in ordinary memory (one blocking
        copy from CUDA: a result kept, such as a denoised frame waiting for
        the writer, must not hold page-locked memory, which torch's cache
        never gives back)."""
        return t.detach().contiguous().cpu().numpy()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Predict a normalised image.

        Parameters
        ----------
        x : (Y, X) float32, already normalised

        Returns
        -------
        (C, Y, X) float32 network output (before any activation)
        """
        t = self.to_device(np.asarray(x, np.float32))
        return self.to_host(self.run_t(t))

    def run_t(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`run` on a tensor, kept where it is; also a batch of images
        of one size in one call (each tile of the batch at once).

        Parameters
        ----------
        x : (Y, X) or (B, Y, X) float32 Tensor, already normalised, on the
            predictor's device

        Returns
        -------
        (C, Y, X) or (B, C, Y, X) float32 Tensor on the predictor's device
        """
        if x.ndim not in (2, 3):
            raise ValueError(f"expected (Y, X) or (B, Y, X), got {tuple(x.shape)}")
        batch = x if x.ndim == 3 else x[None]
        with torch.inference_mode():
            h, w = batch.shape[-2:]
            if h <= self.tile_px and w <= self.tile_px:
                out = self._run_padded(batch)
            else:
                out = self._run_tiled(batch)
        return out if x.ndim == 3 else out[0]

    def _run_tiled(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w = x.shape
        rows, cols = self._layout(h, axis=0), self._layout(w, axis=1)
        out: torch.Tensor | None = None
        for y0, th, ky0, ky1 in rows:
            for x0, tw, kx0, kx1 in cols:
                res = self._run_padded(x[:, y0 : y0 + th, x0 : x0 + tw])
                if out is None:
                    out = torch.empty(
                        (b, res.shape[1], h, w), dtype=torch.float32, device=res.device
                    )
                out[:, :, ky0:ky1, kx0:kx1] = res[
                    :, :, ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0
                ]
        if out is None:
            return torch.empty((b, 0, h, w), dtype=torch.float32, device=x.device)
        return out

    def _tile_size(self, size: int, *, axis: int) -> int:
        """The smallest size at least ``size`` the network takes along
        ``axis`` (0: y, 1: x)."""
        m = self.size_multiple
        return -(-size // m) * m

    def _layout(self, n: int, *, axis: int = 0) -> list[tuple[int, int, int, int]]:
        """Tiles along one axis of ``n`` pixels: (start, size, keep_from,
        keep_to) each. As few tiles as ``tile_px`` allows, sized to the frame
        (not ``tile_px`` each: a 1109-px side is two 592-px tiles, not two of
        1024) and overlapping by at least ``overlap_px``; each keeps the
        pixels up to the middle of its overlaps with its neighbours."""
        t, o = self.tile_px, self.overlap_px
        if n <= t:
            return [(0, n, 0, n)]
        k = -(-(n - o) // (t - o))
        size = -(-(n + (k - 1) * o) // k)
        size = min(t, self._tile_size(size, axis=axis), n)
        starts = [round(i * (n - size) / (k - 1)) for i in range(k)]
        cuts = [0, *((a + size + b) // 2 for a, b in itertools.pairwise(starts)), n]
        return [(s, size, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]
