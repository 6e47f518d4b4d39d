"""Prefect deployments generated from the corpus registry: `charflow deploy`.

Every registered corpus, a module in scrapers/ or an installed package with a
`charflow.corpora` entry point, gets the same deployments, so a plug-in needs no edit of
charflow's files:

    ingest/<corpus>   fetch + clean, on demand (paulgraham: nightly, the live site changes)
    train/<corpus>    scheduled retraining: weekly on Sunday (UTC), one corpus an hour from
                      04:00 in name order; trains only when the corpus changed (flows/train_flow.py)
    sweep/<corpus>    an architecture sweep (or an Optuna search), on demand
    sweep-child/<corpus>  one configuration or trial of a sweep with fan_out=pool, on any worker

plus `pipeline/demo`, the main job (`make demo`): every registered corpus at run time.

`apply` creates or updates them on a Prefect server through its API (a second or two);
`render_yaml` writes the same deployments as a prefect.yaml for `prefect deploy --all`
(the checkout's prefect.yaml is that file for the built-in corpora, kept in step by a test).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
WORK_POOL = "charflow"
WORK_QUEUE = "default"
TIMEZONE = "UTC"

INGEST = "flows/ingest_flow.py:ingest_flow"
TRAIN = "flows/train_flow.py:train_flow"
PIPELINE = "flows/pipeline.py:pipeline_flow"
SWEEP = "flows/sweep_flow.py:sweep_flow"
SWEEP_CHILD = "flows/sweep_flow.py:sweep_child_flow"

# Corpora whose source changes often enough to re-crawl on a schedule (a plug-in's ingest
# runs on demand; give it a schedule in the Prefect UI or with `prefect deployment schedule`).
INGEST_SCHEDULES = {"paulgraham": "0 2 * * *"}
# Weekly retraining: Sunday, the first corpus at 04:00 UTC, the next an hour later...
RETRAIN_FIRST_HOUR = 4
# The scheduled retrain: the 2x256 LSTM preset; it trains only when the corpus changed.
TRAIN_PARAMETERS = {"preset": "cpu-small", "overrides": {}, "force": False}
# The demo: whole corpora, the per-corpus demo settings, trainings two at a time on one
# torch thread each, 3 minutes of training in all (docs/flows.md: how it was chosen).
DEMO_PARAMETERS = {
    "corpora": None,  # every corpus registered when the run starts
    "limit": None,
    "preset": "demo",
    "overrides": {},
    "force": True,
    "budget_seconds": 180,
    "parallel": 2,
    "torch_threads": 1,
}


@dataclass(frozen=True)
class Deployment:
    """One deployment as `prefect deploy` and the Prefect API both describe it."""

    flow: str  # the flow's name: ingest, train, sweep, pipeline
    name: str
    entrypoint: str  # path:function, relative to the checkout
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    cron: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


def has_flow(entrypoint: str) -> bool:
    """Whether the module of `path.py:function` exists in this checkout."""
    return (REPO / entrypoint.split(":", 1)[0]).is_file()


def corpus_deployments(name: str, description: str, hour: int) -> list[Deployment]:
    found = [
        Deployment(
            flow="ingest",
            name=name,
            entrypoint=INGEST,
            description=f"Fetch and clean {name}: {description}",
            parameters={"corpus": name},
            tags=("ingest", name),
            cron=INGEST_SCHEDULES.get(name),
        ),
        Deployment(
            flow="train",
            name=name,
            entrypoint=TRAIN,
            description=f"Weekly retrain on {name}: only when the corpus changed since its "
            "champion (or force=true); the new model becomes champion only if its val loss "
            "is lower.",
            parameters={"corpus": name, **TRAIN_PARAMETERS},
            tags=("train", name),
            cron=f"0 {hour % 24} * * 0",
        ),
    ]
    if has_flow(SWEEP):
        found.append(
            Deployment(
                flow="sweep",
                name=name,
                entrypoint=SWEEP,
                description=f"Compare architectures on {name}, on demand.",
                parameters={"corpus": name},
                tags=("sweep", name),
            )
        )
        found.append(
            Deployment(
                flow="sweep-child",
                name=name,
                entrypoint=SWEEP_CHILD,
                description=f"One configuration or trial of a {name} sweep, on whichever "
                f"worker takes it: sweep/{name} with fan_out=pool starts these.",
                tags=("sweep", name),
            )
        )
    return found


def generate(specs: Iterable | None = None) -> list[Deployment]:
    """Every deployment for these corpus specs (default: the whole registry), then the demo."""
    if specs is None:
        from scrapers.registry import list_corpora

        specs = list_corpora()
    per_corpus: list[Deployment] = []
    for i, spec in enumerate(sorted(specs, key=lambda s: s.name)):
        per_corpus += corpus_deployments(spec.name, spec.description, RETRAIN_FIRST_HOUR + i)
    order = {"ingest": 0, "train": 1, "sweep": 2, "sweep-child": 3}
    found = sorted(per_corpus, key=lambda d: order[d.flow])  # stable: names stay in order
    found.append(
        Deployment(
            flow="pipeline",
            name="demo",
            entrypoint=PIPELINE,
            description="The main job (make demo): ingest every registered corpus whole, then "
            "train each within one time budget, two at a time; ends on a table and an MLflow "
            "link comparing the runs.",
            parameters=dict(DEMO_PARAMETERS),
            tags=("demo",),
        )
    )
    return found


def builtin_specs() -> list:
    """The corpora of charflow itself (modules in scrapers/), without installed plug-ins."""
    from scrapers.registry import list_corpora

    return [s for s in list_corpora() if s.gather.__module__.startswith("scrapers.")]


# -- as a prefect.yaml ------------------------------------------------------------------------

YAML_HEADER = """\
# charflow deployments, generated from the corpus registry by flows/deployments.py:
#     charflow deploy --write prefect.yaml     (this file: the built-in corpora)
#     charflow deploy                          (applies them, plug-in corpora included)
# Edit flows/deployments.py rather than this file; a test keeps the two in step.
# `prefect --no-prompt deploy --all` deploys this file as it stands. Every deployment runs on
# the process work pool `charflow`; the pull step runs the flow in the checkout
# ($CHARFLOW_PROJECT_DIR), so code changes take effect on the next run with no build or push.
"""


def render_yaml(deployments: Iterable[Deployment], work_pool: str = WORK_POOL) -> str:
    body = {
        "name": "charflow",
        "prefect-version": _prefect_version(),
        "build": None,
        "push": None,
        "pull": [_pull_step("{{ $CHARFLOW_PROJECT_DIR }}")],
        "deployments": [
            {
                "name": d.name,
                "entrypoint": d.entrypoint,
                "description": d.description,
                "tags": list(d.tags),
                "parameters": d.parameters,
                **({"schedules": [{"cron": d.cron, "timezone": TIMEZONE}]} if d.cron else {}),
                "work_pool": {"name": work_pool, "work_queue_name": WORK_QUEUE},
            }
            for d in deployments
        ],
    }
    text = yaml.dump(body, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)
    return YAML_HEADER + "\n" + text


class _PlainDumper(yaml.SafeDumper):
    """No &id001 anchors for parameters that share one dict."""

    def ignore_aliases(self, data) -> bool:
        return True


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


def _pull_step(directory: str) -> dict:
    return {"prefect.deployments.steps.set_working_directory": {"directory": directory}}


# -- on a Prefect server ------------------------------------------------------------------------


def load_flow(entrypoint: str):
    """The Flow object at `flows/x.py:name` (imported as a module of this checkout)."""
    path, attr = entrypoint.split(":", 1)
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, attr)


def apply(
    deployments: Iterable[Deployment],
    api_url: str,
    project_dir: Path = REPO,
    work_pool: str = WORK_POOL,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Create or update each deployment on the server at `api_url` (schedules replaced);
    returns their full names."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    done = []
    flows: dict[str, Any] = {}
    with SyncPrefectClient(api_url) as client:
        for d in deployments:
            if d.entrypoint not in flows:
                try:
                    flows[d.entrypoint] = load_flow(d.entrypoint)
                except Exception as err:  # one broken flow module must not stop the others
                    log(f"{d.entrypoint}: cannot load ({type(err).__name__}: {err}); skipped")
                    flows[d.entrypoint] = None
            flow = flows[d.entrypoint]
            if flow is None:
                continue
            schedules = (
                [DeploymentScheduleCreate(schedule=CronSchedule(cron=d.cron, timezone=TIMEZONE))]
                if d.cron
                else []
            )
            client.create_deployment(
                flow_id=client.create_flow_from_name(flow.name),
                name=d.name,
                entrypoint=d.entrypoint,
                description=d.description,
                parameters=d.parameters,
                parameter_openapi_schema=flow.parameters.model_dump(exclude_unset=True),
                tags=list(d.tags),
                work_pool_name=work_pool,
                work_queue_name=WORK_QUEUE,
                pull_steps=[_pull_step(str(project_dir))],
                schedules=schedules,
                job_variables={},
            )
            log(f"deployment {d.full_name}" + (f" (cron {d.cron} {TIMEZONE})" if d.cron else ""))
            done.append(d.full_name)
    return done
