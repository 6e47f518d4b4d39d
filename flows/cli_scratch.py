"""`charflow gradcheck` and `charflow scratch train`: the numpy reference models."""

from __future__ import annotations

from pathlib import Path

import typer


def gradcheck(
    torch_check: bool = typer.Option(
        True, "--torch/--no-torch", help="also cross-check against the PyTorch CharModel"
    ),
) -> None:
    """Check every backward pass against finite differences and PyTorch; exit 1 on any fail."""
    from training.reference.gradcheck import finite_difference_rows, format_table

    rows = finite_difference_rows()
    if torch_check:
        from training.reference.crosscheck import crosscheck_rows

        rows += crosscheck_rows()
    typer.echo(format_table(rows))
    failed = [r for r in rows if not r.passed]
    typer.echo(f"\n{len(rows) - len(failed)}/{len(rows)} checks passed")
    if failed:
        raise typer.Exit(1)


def train(
    text: Path = typer.Option(..., "--text", help="corpus folder (data/NAME) or UTF-8 text file"),
    model: str = typer.Option("rnn", "--model", help="rnn | lstm | minchar"),
    layers: int = typer.Option(1, "--layers", help="number of stacked layers"),
    hidden: int = typer.Option(100, "--hidden", help="hidden size"),
    seq_len: int = typer.Option(25, "--seq-len", help="chars per step (BPTT length)"),
    lr: float = typer.Option(0.1, "--lr", help="Adagrad learning rate"),
    steps: int = typer.Option(5000, "--steps", help="training steps (one chunk each)"),
    sample_every: int = typer.Option(1000, "--sample-every", help="0: only at the end"),
    sample_chars: int = typer.Option(200, "--sample-chars"),
    eval_every: int = typer.Option(1000, "--eval-every", help="val loss every N steps; 0: end"),
    eval_chars: int = typer.Option(20_000, "--eval-chars", help="chars of val/test to score"),
    log_every: int = typer.Option(100, "--log-every", help="MLflow train_loss every N steps"),
    seed: int = typer.Option(1337, "--seed"),
    corpus: str | None = typer.Option(None, "--corpus", help="MLflow experiment charflow/NAME"),
    track: bool = typer.Option(True, "--track/--no-track", help="log the run to MLflow"),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="progress bar (default: on a terminal)"
    ),
) -> None:
    """Train a numpy model from scratch (min-char-rnn's loop: Adagrad, clip +-5)."""
    from training.reference.train import ScratchConfig, train_scratch

    cfg = ScratchConfig(
        model=model,
        hidden_size=hidden,
        num_layers=layers,
        seq_len=seq_len,
        lr=lr,
        max_steps=steps,
        sample_every=sample_every,
        sample_chars=sample_chars,
        log_every=log_every,
        eval_every=eval_every,
        eval_chars=eval_chars,
        seed=seed,
    )
    result = train_scratch(cfg, text, corpus=corpus, track=track, progress=progress)
    shown = [f"{result.steps} steps", f"smooth train loss {result.smooth_loss:.4f}"]
    shown += [
        f"{k} {v:.4f}" for k, v in (("val", result.val_loss), ("test", result.test_loss)) if v
    ]
    typer.echo("done: " + ", ".join(shown) + " (nats/char)")
    if result.run_id:
        typer.echo(f"MLflow run: {result.run_id}")


def register(app: typer.Typer) -> None:
    app.command("gradcheck")(gradcheck)
    scratch = typer.Typer(no_args_is_help=True, help="numpy models written from scratch")
    scratch.command("train")(train)
    app.add_typer(scratch, name="scratch")
