"""The `charflow` command line: a typer app over the library functions.

Each command group lives in its own module and registers itself here; user errors from
the library (TrainingError, IngestError) become one line on stderr and exit status 1.
"""

from __future__ import annotations

import signal
import sys

import click
import typer

from flows import cli_corpus, cli_flows, cli_scratch, cli_sweep, cli_sync, cli_train
from scrapers.errors import IngestError
from training.errors import TrainingError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="charflow: corpora -> character-level language models, tracked in MLflow.",
)
for module in (cli_train, cli_sweep, cli_corpus, cli_scratch, cli_flows, cli_sync):
    module.register(app)

USER_ERRORS = (TrainingError, IngestError, FileNotFoundError)


_received: list[int] = []  # the signal that stopped the command, for its exit status


def _interrupt(signum: int, _frame) -> None:
    """SIGTERM (`kill`, a service manager, a cancelled job) stops a command as Ctrl-C does:
    a training saves a checkpoint to resume from and its run ends KILLED, not RUNNING."""
    _received.append(signum)
    raise KeyboardInterrupt


def main() -> None:
    from training.mlflow_setup import set_mlflow_env_defaults

    set_mlflow_env_defaults()  # now, before anything imports mlflow: it reads them at import
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = app(standalone_mode=False)
        if _received:  # typer ends an interrupted command with 130, whatever the signal
            code = 128 + _received[0]
        if isinstance(code, int) and code:  # typer.Exit(n) comes back as a return value here
            sys.exit(code)
    except USER_ERRORS as err:
        print(f"charflow: error: {err}", file=sys.stderr)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):  # the usual shell status, no traceback
        print("charflow: interrupted", file=sys.stderr)
        sys.exit(128 + (_received[0] if _received else signal.SIGINT))
    except (typer.TyperException, click.ClickException) as err:
        # Usage mistakes (missing argument, unknown option or command): the short usage
        # message and status 2, as in click's standalone mode. typer vendors its own click,
        # whose exceptions derive from typer.TyperException, not from click's.
        err.show()
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
