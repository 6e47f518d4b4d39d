"""`charflow train` and `charflow sample`: thin commands over training/ (torch loads lazily)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from training.errors import TrainingError


def train(
    source: Path = typer.Argument(..., help="corpus folder (data/NAME) or UTF-8 text file"),
    corpus: str | None = typer.Option(None, help="corpus name (default: folder name/file stem)"),
    preset: str | None = typer.Option(None, help="cpu-small (default), tiny or gpu"),
    model: str | None = typer.Option(None, help="rnn, gru or lstm"),
    layers: int | None = typer.Option(None, help="recurrent layers"),
    hidden: int | None = typer.Option(None, help="hidden size"),
    emb: int | None = typer.Option(None, help="embedding size"),
    dropout: float | None = typer.Option(None),
    batch_size: int | None = typer.Option(None, help="parallel streams per step"),
    seq_len: int | None = typer.Option(None, help="BPTT chunk length"),
    lr: float | None = typer.Option(None, help="peak learning rate"),
    warmup_steps: int | None = typer.Option(None),
    max_steps: int | None = typer.Option(None),
    max_seconds: float | None = typer.Option(None, help="training time budget (all resumes)"),
    eval_every: int | None = typer.Option(None, help="steps between evaluations"),
    patience: int | None = typer.Option(None, help="evaluations without progress; 0 = off"),
    val_fraction: float | None = typer.Option(None),
    test_fraction: float | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/last.pt"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="start afresh in an OUT that already holds a run"
    ),
    track: bool = typer.Option(True, "--track/--no-track", help="log to MLflow"),
    run_name: str | None = typer.Option(None, help="MLflow run name (default CORPUS-ARCH-TIME)"),
    tags: list[str] | None = typer.Option(
        None, "--tag", metavar="KEY=VALUE", help="MLflow tag on the run (repeatable)"
    ),
    out: Path | None = typer.Option(
        None, help="checkpoint folder (default: a new checkpoints/CORPUS/<time>-<id>)"
    ),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    nproc: int = typer.Option(
        1, min=1, help="processes (DDP; one per GPU); --batch-size is per process"
    ),
    settings: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="any training setting by its config name, e.g. --set weight_decay=0 (repeatable)",
    ),
) -> None:
    """Train a character-level model; checkpoints best.pt and last.pt go to OUT."""
    from flows.corpus_settings import corpus_defaults
    from training import distributed
    from training.checkpoint import resume_config
    from training.config import TrainConfig, build_config, parse_assignments
    from training.data import corpus_name
    from training.mlflow_names import user_tags
    from training.run_dir import latest_run_dir, new_run_dir
    from training.train import train as run_training
    from training.units import bits

    name = corpus or corpus_name(source)
    # a folder of its own per run; --resume continues the corpus's latest
    out_dir = out or (latest_run_dir(name) if resume else new_run_dir(name))
    overrides = dict(
        model=model,
        num_layers=layers,
        hidden_size=hidden,
        emb_size=emb,
        dropout=dropout,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        max_seconds=max_seconds,
        eval_every=eval_every,
        patience=patience,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        device=device,
    )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # A setting given both as a flag and with --set is refused rather than ranked, so
    # neither silently loses.
    set_overrides = TrainConfig.parse_overrides(parse_assignments(settings or []))
    twice = sorted(set(overrides) & set(set_overrides))
    if twice:
        raise TrainingError(f"{', '.join(twice)} given both as a flag and with --set; give it once")
    overrides |= set_overrides
    if resume:
        if preset is not None:
            raise TrainingError("--preset does not combine with --resume (the run keeps its own)")
        world_size = nproc if nproc > 1 else distributed.ranks_from_env().world_size
        cfg = resume_config(out_dir, world_size).replace(**overrides)
    else:
        # replace(), not build_config's overrides, so `--set max_seconds=none` stays None
        cfg = build_config(preset or "cpu-small", corpus_defaults(name)).replace(**overrides)
    args = dict(
        corpus=name,
        out_dir=out_dir,
        resume=resume,
        overwrite=overwrite,
        track=track,
        progress=progress,
        run_name=run_name,
        run_tags=user_tags(tags or []),
    )
    if nproc > 1:
        result = distributed.launch(nproc, run_training, cfg, source, **args)
    else:
        result = run_training(cfg, source, **args)
    if not distributed.ranks_from_env().is_main:  # under torchrun: rank 0 reports
        return
    typer.echo(
        f"best val loss {result.best_val_loss:.4f} nats/char "
        f"({bits(result.best_val_loss):.3f} bits/char), "
        f"test {result.test_loss:.4f}, {result.steps} steps ({result.stopped_because})"
    )
    typer.echo(f"checkpoints: {result.best_checkpoint} {result.last_checkpoint}")
    if result.run_id:
        typer.echo(
            f"MLflow run {result.run_id}; model version {result.model_version} "
            f"({result.champion_reason})"
        )


def sample(
    checkpoint: Path | None = typer.Option(None, help="checkpoint file (best.pt / last.pt)"),
    model_uri: str | None = typer.Option(
        None, help="MLflow model, e.g. models:/charflow-X@champion"
    ),
    length: int = typer.Option(500, help="characters to generate"),
    temperature: float = typer.Option(1.0, help="0 = always the most likely character"),
    top_k: int | None = typer.Option(None, help="sample among the K most likely characters"),
    prime: str = typer.Option("", help="text to start from (printed first)"),
    seed: int | None = typer.Option(None, help="same seed, same text"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Stream sampled text to stdout, one character at a time."""
    from training.sample import check_sampling, generate, load_sampler, visible_breaks

    check_sampling(length, temperature, top_k)
    if (checkpoint is None) == (model_uri is None):
        raise TrainingError("give exactly one of a checkpoint path or an MLflow model URI")
    if model_uri is not None:
        from training.pyfunc import download_checkpoint  # MLflow loads only when asked for

        checkpoint = download_checkpoint(model_uri)
    model, vocab, start = load_sampler(checkpoint, device)
    chars = generate(
        model,
        vocab,
        length=length,
        prime=prime,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        start=start,
    )
    first = next(chars, "")  # an unknown prime character fails here, before any output
    out = sys.stdout
    try:
        out.write(prime + visible_breaks(first))
        out.flush()
        for ch in chars:
            out.write(visible_breaks(ch))  # a document boundary as a line people see
            out.flush()
        out.write("\n")
        out.flush()
    except BrokenPipeError:  # the reader (e.g. `head`) has had enough: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(sample)
