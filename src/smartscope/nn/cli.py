"""``smartscope train {care,n2v,segment,mitosis}``: train a model and write it with its card.

A typer sub-app (``train_app``) that the main CLI mounts as ``train``; it also
runs on its own as ``python -m smartscope.nn.cli``. Each command trains on
simulator-generated data (the default) or on a folder of TIFFs, shows a rich
progress bar, keeps checkpoints in ``OUT/checkpoints/``, and writes the model
(``weights.pt`` + ``rdf.yaml``) and a QC report (``OUT/qc/``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["train_app"]

train_app = typer.Typer(
    name="train",
    help="Train denoising (CARE, Noise2Void), nuclei segmentation and mitosis "
    "classification models.",
    no_args_is_help=True,
    add_completion=False,
)

_DESCRIPTIONS = {
    "care": "CARE denoiser: a U-Net trained on pairs of low-dose and noise-free images.",
    "n2v": "Noise2Void denoiser: a blind-spot U-Net trained on noisy images alone.",
    "segment": (
        "Nuclei instance segmentation: a U-Net predicting foreground and normalised "
        "border distance, split into nuclei by a seeded watershed."
    ),
}

Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="model folder to write (e.g. models/NAME to replace a shipped model); "
        "required, so a trial run never overwrites a shipped model",
    ),
]
Data = Annotated[
    Path | None,
    typer.Option(
        "--data", help="folder of TIFFs instead of the simulator (see the command help)"
    ),
]
Steps = Annotated[int, typer.Option(help="optimiser steps")]
Batch = Annotated[int, typer.Option(help="patches per step")]
Patch = Annotated[int, typer.Option(help="patch side, pixels")]
Seed = Annotated[
    int, typer.Option(help="seed of data, initialisation and augmentation")
]
Width = Annotated[int, typer.Option(help="U-Net channels at full resolution")]
Depth = Annotated[int, typer.Option(help="U-Net down-samplings")]
Fields = Annotated[int, typer.Option(help="simulated training fields")]
Threads = Annotated[int, typer.Option(help="torch CPU threads")]
AutoThreads = Annotated[
    str,
    typer.Option(
        help="torch CPU threads, or 'auto': chosen from the steps' own times "
        "(one thread beats two on a busy 2-core machine)"
    ),
]
Workers = Annotated[int, typer.Option(help="data-loading processes")]
Name = Annotated[
    str | None, typer.Option(help="model name in rdf.yaml (default: folder name)")
]


def _command_line() -> str:
    argv = sys.argv[1:]
    if "train" in argv:
        argv = argv[argv.index("train") + 1 :]
    return "smartscope train " + " ".join(shlex.quote(a) for a in argv)


#: the train commands' option names that differ from TrainConfig's field names
_FIELDS = {
    "data": "data_dir",
    "batch": "batch_size",
    "patch": "patch_px",
    "width": "base_channels",
    "fields": "train_fields",
    "mask_fraction": "n2v_mask_fraction",
}


def _train(method: str, options: dict[str, Any]) -> None:
    """Run ``method`` with a train command's options (its ``locals()``, i.e.
    exactly its parameters), renamed to TrainConfig's fields."""
    kw = {_FIELDS.get(k, k): v for k, v in options.items()}
    _run(method, kw.pop("out"), kw.pop("name"), **kw)


def _progress_bar(console: Any) -> Any:
    """The training commands' progress bar: phase, bar, losses, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _training_step(
    console: Any, bar: Any, task: Any, done: int, total: int, text: str | None
) -> None:
    """Advance the bar to step ``done``; ``text``: the losses at a check (a
    log file, not a terminal, also gets them as one line)."""
    if text and not console.is_terminal:
        console.print(f"step {done}/{total}: {text}", highlight=False)
    bar.update(
        task,
        description="training",
        total=total,
        completed=done,
        **({"info": text} if text else {}),
    )


def _run(method: str, out: Path, name: str | None, **kw: Any) -> None:
    from rich.console import Console

    from smartscope.nn.errors import ModelError
    from smartscope.nn.model import save_model
    from smartscope.nn.qc import write_report
    from smartscope.nn.train import TrainConfig, train

    console = Console(stderr=True)
    try:
        config = TrainConfig(method=method, **kw)
    except Exception as e:
        console.print(f"[red]invalid training settings:[/red] {e}")
        raise typer.Exit(2) from e
    with _progress_bar(console) as bar:
        task = bar.add_task("making data", total=config.steps, info="")

        def progress(phase: str, done: int, total: int, info: dict[str, float]) -> None:
            if phase == "train":
                text = (
                    f"train {info['train_loss']:.4g} val {info['val_loss']:.4g}"
                    if info
                    else None
                )
                _training_step(console, bar, task, done, total, text)
            elif phase == "validate":
                bar.update(task, description="scoring validation frames")

        try:
            result = train(
                config,
                command=_command_line(),
                checkpoint_dir=out / "checkpoints",
                progress=progress,
            )
        except ModelError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from e
    model_name = name or out.name
    result.model.name = model_name
    save_model(
        result.network,
        result.model.card,
        out,
        name=model_name,
        description=_DESCRIPTIONS[method],
    )
    report = write_report(result, out)
    m = result.metrics
    if method == "segment":
        console.print(
            f"AP@0.5 {m['ap50']:.3f} (Otsu+watershed {m['ap50_otsu_watershed']:.3f}), "
            f"AP@0.75 {m['ap75']:.3f} (Otsu+watershed {m['ap75_otsu_watershed']:.3f})"
        )
    elif "psnr_db" in m:
        console.print(
            f"PSNR {m['psnr_db']:.2f} dB (input {m['psnr_db_input']:.2f}, best Gaussian "
            f"{m['psnr_db_gaussian']:.2f} at sigma {m['gaussian_sigma_px']})"
        )
    console.print(f"model written to {out}; QC report {report}")


@train_app.command("care")
def care(
    out: Out,
    data: Data = None,
    steps: Steps = 2000,
    batch: Batch = 16,
    patch: Patch = 96,
    seed: Seed = 0,
    width: Width = 16,
    depth: Depth = 3,
    fields: Fields = 120,
    threads: AutoThreads = "auto",
    workers: Workers = 1,
    name: Name = None,
) -> None:
    """CARE: supervised denoising. --data DIR needs DIR/low/*.tif and DIR/high/*.tif
    with matching names (low-dose and high-dose images of the same fields)."""
    _train("care", locals())


@train_app.command("n2v")
def n2v(
    out: Out,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="the noisy images to learn from: a TIFF (image or stack), a "
            "folder of TIFFs, or a run folder / its data.ome.zarr; none: the "
            "simulator",
        ),
    ] = None,
    # on one real 512 x 512 image the PSNR stops rising after about 250 such
    # steps (docs/models.md): 800 fit in about 2 minutes on 2 cores
    steps: Steps = 800,
    batch: Batch = 32,
    patch: Patch = 64,
    seed: Seed = 0,
    width: Width = 16,
    depth: Depth = 3,
    fields: Fields = 120,
    threads: AutoThreads = "auto",
    workers: Workers = 1,
    name: Name = None,
    mask_fraction: Annotated[
        float,
        typer.Option(help="fraction of each patch's pixels masked (blind spots)"),
    ] = 0.05,
    init: Annotated[
        str,
        typer.Option(
            help="model to start from (name or path; its U-Net replaces --width "
            "and --depth), 'none' for random weights, 'auto': the shipped "
            "denoise-n2v with --data and the default --width/--depth, random "
            "otherwise"
        ),
    ] = "auto",
) -> None:
    """Noise2Void: self-supervised denoising on noisy images alone, e.g. the
    image you want denoised itself (--data image.tif). One image is split: a
    band of its rows is held out for validation."""
    if init == "auto":  # the shipped model's U-Net is 16 wide, 3 deep
        init = (
            "denoise-n2v" if data is not None and (width, depth) == (16, 3) else "none"
        )
    options = dict(locals())
    options["init"] = None if init == "none" else init
    _train("n2v", options)


@train_app.command("segment")
def segment(
    out: Out,
    data: Data = None,
    steps: Steps = 2500,
    batch: Batch = 16,
    patch: Patch = 128,
    seed: Seed = 0,
    width: Width = 16,
    depth: Depth = 3,
    fields: Fields = 160,
    threads: Threads = 2,
    workers: Workers = 1,
    name: Name = None,
    val_fields: Annotated[
        int, typer.Option(help="simulated validation fields (scored on the card)")
    ] = 16,
    lr: Annotated[float, typer.Option(help="peak learning rate (one-cycle)")] = 2e-3,
    init: Annotated[
        str,
        typer.Option(
            help="segmentation model to start from (name or path; its U-Net "
            "replaces --width and --depth), or 'none' for random weights"
        ),
    ] = "none",
    sim_fraction: Annotated[
        float,
        typer.Option(
            help="with --data: share of the training crops drawn from --fields "
            "simulated fields instead (keeps the simulator's variety); 0: the "
            "user's images only"
        ),
    ] = 0.0,
) -> None:
    """Nuclei instance segmentation. --data DIR needs DIR/images/*.tif and
    DIR/masks/*.tif (integer instance labels) with matching names; a share of
    them (15%, at random) is held out to pick the weights and tune the
    watershed's thresholds at the automatic nucleus size, and is scored in the
    QC report. To adapt the shipped model to your images:
    --data DIR --init nuclei-seg --sim-fraction 0.3 --lr 1e-3."""
    options = dict(locals())
    options["init"] = None if init == "none" else init
    _train("segment", options)


@train_app.command("mitosis")
def mitosis(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="model folder to write (e.g. models/mitosis-clf); required, so a "
            "trial run never overwrites a shipped model",
        ),
    ],
    steps: Steps = 600,
    batch: Annotated[int, typer.Option(help="crops per step")] = 128,
    seed: Annotated[
        int, typer.Option(help="seed of initialisation and augmentation")
    ] = 0,
    width: Annotated[int, typer.Option(help="CNN channels of the first block")] = 16,
    train_runs: Annotated[
        int,
        typer.Option(help="simulated training time-lapses (seeds from --train-seed)"),
    ] = 24,
    train_seed: Annotated[int, typer.Option(help="first training seed")] = 1000,
    tune_runs: Annotated[
        int, typer.Option(help="runs that choose the best step and threshold")
    ] = 4,
    tune_seed: Annotated[int, typer.Option(help="first tuning seed")] = 2000,
    val_runs: Annotated[int, typer.Option(help="training-like validation runs")] = 6,
    val_seed: Annotated[int, typer.Option(help="first validation seed")] = 5200,
    protocol_val_runs: Annotated[
        int, typer.Option(help="6-h validation runs of the event protocol's scene")
    ] = 5,
    protocol_val_seed: Annotated[
        int, typer.Option(help="first event-protocol validation seed")
    ] = 6200,
    time_points: Annotated[
        int, typer.Option(help="time points per training and tuning run")
    ] = 24,
    val_every: Annotated[int, typer.Option(help="steps between tuning checks")] = 100,
    threads: Threads = 2,
    name: Name = None,
) -> None:
    """Mitosis classifier on nucleus crops, trained on simulated time-lapses with
    truth; QC (per-frame and per-event precision and recall, against the
    threshold detector) on separate seeded runs. Used by the event_rate
    reaction with `detector: {method: model, model: OUT}`."""
    from rich.console import Console

    from smartscope.nn.errors import ModelError
    from smartscope.nn.mitosis_train import (
        MitosisTrainConfig,
        train_mitosis,
        write_mitosis_model,
    )

    console = Console(stderr=True)
    options = dict(locals())
    kw = {
        k: options[k]
        for k in MitosisTrainConfig.model_fields
        if k in options and k != "crop"
    }
    kw["batch_size"] = batch
    try:
        config = MitosisTrainConfig(**kw)
        config.check_seeds()
    except Exception as e:
        console.print(f"[red]invalid training settings:[/red] {e}")
        raise typer.Exit(2) from e
    with _progress_bar(console) as bar:
        task = bar.add_task("simulating", total=config.steps, info="")

        def progress(phase: str, done: int, total: int, info: dict[str, float]) -> None:
            if phase == "train":
                text = (
                    f"loss {info['train_loss']:.3g} tune F1 {info['tune_f1']:.3f}"
                    if info
                    else None
                )
                _training_step(console, bar, task, done, total, text)
            else:
                bar.update(task, description=phase, total=max(total, 1), completed=done)

        try:
            result = train_mitosis(config, command=_command_line(), progress=progress)
        except (ModelError, ValueError) as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from e
    write_mitosis_model(result, out, name=name)
    for which, m in result.metrics.items():
        a, b = m["model"], m["threshold_detector"]
        console.print(
            f"{which} (seeds {m['seeds'][0]}-{m['seeds'][-1]}): per frame P/R "
            f"{a['frame_precision']}/{a['frame_recall']} (threshold rule "
            f"{b['frame_precision']}/{b['frame_recall']}); per event P/R "
            f"{a['event_precision']}/{a['event_recall']} (threshold rule "
            f"{b['event_precision']}/{b['event_recall']}), {a['events']} events",
            highlight=False,
        )
    console.print(f"model written to {out}")


@train_app.command("export")
def export(
    model: Annotated[str, typer.Argument(help="shipped model name or model folder")],
    out: Annotated[
        Path, typer.Argument(help="package to write: a .zip file or a folder")
    ],
    torchscript: Annotated[
        bool, typer.Option(help="include TorchScript weights")
    ] = True,
) -> None:
    """Export a model as a bioimage.io package (TorchScript + state dict,
    rdf.yaml, test input/output); load it back with load_model(OUT)."""
    from rich.console import Console

    from smartscope.nn.errors import ModelError
    from smartscope.nn.export import export_model
    from smartscope.nn.model import load_model

    console = Console(stderr=True)
    try:
        loaded = load_model(model, device="cpu")
        if loaded.kind == "event":
            raise ModelError(
                f"{model!r} is the mitosis classifier: its folder is already a "
                "bioimage.io model (rdf.yaml, weights.pt, test tensors); export "
                "packages the U-Net models"
            )
        path = export_model(loaded, out, torchscript=torchscript)
    except ModelError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    console.print(f"package written to {path}")


@train_app.command("quantize")
def quantize(
    folder: Annotated[Path, typer.Argument(help="model folder to add int8 weights to")],
    force: Annotated[
        bool, typer.Option(help="write them even when less accurate")
    ] = False,
) -> None:
    """Add int8 ONNX weights for the CPU to a model folder, if they keep its
    accuracy on the validation frames (AP within 0.01, PSNR within 0.2 dB)."""
    from smartscope.nn.quantize import main as quantize_main

    raise typer.Exit(quantize_main([str(folder), *(["--force"] if force else [])]))


@train_app.command("evaluate")
def evaluate(
    out: Annotated[
        Path | None, typer.Option("--out", help="also write the numbers as JSON")
    ] = None,
) -> None:
    """Score the shipped models against Gaussian / Otsu+watershed baselines on
    simulated validation data and on shifted, real-looking frames."""
    from smartscope.nn.evaluate import main as evaluate_main

    raise typer.Exit(evaluate_main([] if out is None else ["--out", str(out)]))


if __name__ == "__main__":
    train_app()
