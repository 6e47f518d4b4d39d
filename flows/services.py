"""The local stack behind `make demo`: a Prefect server, a process worker, the MLflow UI
and, for offline runs, a loopback mirror of the corpora.

Each service is a plain background process whose pid and log live under `<home>/.run/`.
`up` reuses a service that is already running; `down` stops only the processes whose pid
files it finds, and only after checking that the pid still runs the recorded command
(pids get reused). Everything binds to 127.0.0.1 and nothing phones home.

    charflow services up [--mirror DIR]     # make services
    charflow services status
    charflow services down                  # make down
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from charflow import paths

REPO = Path(__file__).resolve().parent.parent  # the checkout: prefect.yaml, flows/
HOST = "127.0.0.1"
WORK_POOL = "charflow"
WORKER_NAME = "charflow-local"

# No telemetry from anything the stack starts.
QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # A deployment's project declares prefect; never let the worker `uv run` (re)install it.
    "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
}


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message says which and why."""


@dataclass
class Stack:
    """Where one local stack keeps its state and which loopback ports it uses."""

    home: Path  # CHARFLOW_HOME: data/, mlruns/, checkpoints/ and .run/ live here
    prefect_port: int = 4200
    mlflow_port: int = 5000
    mirror: Path | None = None  # a folder laid out like ../shared/corpora
    mirror_port: int = 8765
    worker_poll_seconds: float = 2.0
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Stack:
        env = os.environ
        mirror = env.get("MIRROR") or None
        return cls(
            home=paths.charflow_home(),
            prefect_port=int(env.get("PREFECT_PORT", 4200)),
            mlflow_port=int(env.get("MLFLOW_PORT", 5000)),
            mirror=Path(mirror).resolve() if mirror else None,
            mirror_port=int(env.get("MIRROR_PORT", 8765)),
        )

    def _at_home(self, where: Callable[[], Path]) -> Path:
        """`where` (a charflow.paths function) inside this stack's home: the layout is the
        one every process of the stack sees (CHARFLOW_HOME=home), the root may differ from
        this process's own (tests run stacks in temporary homes)."""
        return self.home / where().relative_to(paths.charflow_home())

    @property
    def run_dir(self) -> Path:
        return self._at_home(paths.run_dir)

    @property
    def prefect_home(self) -> Path:
        return self._at_home(paths.prefect_home)

    @property
    def mlruns(self) -> Path:
        return self._at_home(paths.mlruns_dir)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def mlflow_ui_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def mirror_url(self) -> str | None:
        return f"http://{HOST}:{self.mirror_port}" if self.mirror else None

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns / 'mlflow.db'}"

    def client_env(self) -> dict[str, str]:
        """Environment for anything that talks to this stack: the worker, its flow runs,
        `prefect deploy`, `prefect deployment run`, tests."""
        return {
            **QUIET_ENV,
            "CHARFLOW_HOME": str(self.home),
            "CHARFLOW_PROJECT_DIR": str(REPO),
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.api_url,
            "MLFLOW_UI_URL": self.mlflow_ui_url,
            **self.extra_env,
        }


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    port: int | None = None  # checked free before starting, so a stranger's server is not reused
    timeout: float = 180.0


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    return check


def prefect_server(stack: Stack) -> Service:
    db = stack.prefect_home / "prefect.db"
    env = {
        **stack.client_env(),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(stack.prefect_port),
        # `prefect deployment run --watch` streams a flow run's logs (the pipeline's reasons
        # for a failed or skipped corpus, its summary) only when the server publishes them.
        "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
        "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
    }
    argv = _python("prefect", "server", "start", "--host", HOST, "--port", str(stack.prefect_port))
    return Service(
        "prefect-server", argv, env, _http_ok(f"{stack.api_url}/health"), stack.prefect_port
    )


def prefect_worker(stack: Stack) -> Service:
    env = {
        **stack.client_env(),
        "PREFECT_WORKER_QUERY_SECONDS": str(stack.worker_poll_seconds),
        "PREFECT_WORKER_PREFETCH_SECONDS": str(stack.worker_poll_seconds),
    }
    argv = _python(
        "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
        "--name", WORKER_NAME,
    )  # fmt: skip
    return Service("prefect-worker", argv, env, lambda: worker_online(stack))


def mlflow_ui(stack: Stack) -> Service:
    argv = _python(
        "mlflow", "ui", "--backend-store-uri", stack.tracking_uri,
        "--default-artifact-root", str(stack.mlruns / "artifacts"),
        "--host", HOST, "--port", str(stack.mlflow_port), "--workers", "1",
    )  # fmt: skip
    # The UI only browses runs; its background job runners (GenAI features) cost a dozen processes.
    env = {**stack.client_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return Service(
        "mlflow-ui", argv, env, _http_ok(f"{stack.mlflow_ui_url}/health"), stack.mlflow_port
    )


def mirror_server(stack: Stack) -> Service:
    assert stack.mirror is not None
    argv = _python("scrapers.mirror", str(stack.mirror), "--port", str(stack.mirror_port))
    return Service(
        "mirror", argv, stack.client_env(), _http_ok(f"{stack.mirror_url}/"), stack.mirror_port
    )


# -- one background process ---------------------------------------------------------------


def _pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def _cmdline(pid: int) -> list[str] | None:
    """The argv a live pid runs, or None when no such process is ours to see."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (macOS): ask ps; spaces inside arguments are lost
        out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True)
        return out.stdout.decode().split() if out.returncode == 0 else None
    return raw.decode(errors="replace").split("\0")[:-1] or None


def running(run_dir: Path, name: str) -> dict | None:
    """The record of a service this stack started and that still runs that command."""
    pid_file = _pid_file(run_dir, name)
    try:
        record = json.loads(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    argv = _cmdline(record["pid"])
    if argv is None or " ".join(argv) != " ".join(record["argv"]):
        return None
    return record


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def start(service: Service, run_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Start `service` in the background (or reuse it) and wait until it answers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = running(run_dir, service.name)
    if record is not None:
        if record["argv"] != service.argv:
            raise ServiceError(
                f"{service.name} already runs (pid {record['pid']}) with other settings; "
                "stop it first with `make down`"
            )
        log(f"{service.name}: already running (pid {record['pid']})")
        return record
    if service.port is not None and _port_busy(service.port):
        raise ServiceError(
            f"{service.name}: port {service.port} on {HOST} is taken by another program; "
            "choose another port (PREFECT_PORT, MLFLOW_PORT, MIRROR_PORT)"
        )
    log_path = run_dir / f"{service.name}.log"
    with open(log_path, "ab") as log_file:
        # Own session: `down` can signal the whole group (servers fork their workers).
        proc = subprocess.Popen(
            service.argv,
            env={**os.environ, **service.env},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = {"pid": proc.pid, "argv": service.argv, "log": str(log_path), "started": time.time()}
    tmp = _pid_file(run_dir, service.name).with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, _pid_file(run_dir, service.name))
    deadline = time.monotonic() + service.timeout
    while not service.ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with status {proc.poll()}" if proc.poll() is not None else "timed out"
            stop(run_dir, service.name, log=lambda _: None)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{service.name} {why} while starting; log {log_path}:\n{tail}")
        time.sleep(0.5)
    log(f"{service.name}: started (pid {proc.pid}, log {log_path})")
    return record


def stop(run_dir: Path, name: str, log: Callable[[str], None] = print, grace: float = 20) -> bool:
    """Stop a service this stack started; True when one was running."""
    pid_file = _pid_file(run_dir, name)
    record = running(run_dir, name)
    if record is None:
        if pid_file.exists():
            log(f"{name}: not running (stale pid file removed)")
            pid_file.unlink()
        return False
    pid = record["pid"]
    try:
        sig_target = pid if os.getpgid(pid) == pid else None  # its own group, as `start` made it
    except ProcessLookupError:  # exited since `running` looked
        sig_target = None
    _signal(pid, sig_target, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _cmdline(pid) is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    # The group may hold workers that outlived their leader: kill whatever is left of it.
    if _cmdline(pid) is not None or sig_target is not None:
        _signal(pid, sig_target, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    log(f"{name}: stopped (pid {pid})")
    return True


def _signal(pid: int, group: int | None, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group is not None:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status when the caller is the parent (tests), so no zombie lingers."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# -- the stack -------------------------------------------------------------------------------


def worker_online(stack: Stack) -> bool:
    try:
        resp = requests.post(
            f"{stack.api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=5
        )
    except requests.RequestException:
        return False
    return resp.ok and any(
        w["name"] == WORKER_NAME and w.get("status") == "ONLINE" for w in resp.json()
    )


def ensure_work_pool(stack: Stack) -> None:
    """Create the process work pool `charflow` with Prefect's default job template."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with SyncPrefectClient(stack.api_url) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(
            WorkPoolCreate(
                name=WORK_POOL,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )


def services(stack: Stack) -> list[Service]:
    """The stack's services in start order (`down` stops them in reverse)."""
    found = [prefect_server(stack), prefect_worker(stack), mlflow_ui(stack)]
    if stack.mirror is not None:
        found.append(mirror_server(stack))
    return found


SERVICE_NAMES = ("prefect-server", "prefect-worker", "mlflow-ui", "mirror")


def up(
    stack: Stack, *, with_mlflow: bool = True, log: Callable[[str], None] = print
) -> dict[str, str]:
    """Start (or reuse) the stack; returns the addresses to print."""
    if stack.mirror is not None and not stack.mirror.is_dir():
        raise ServiceError(f"mirror folder {stack.mirror} does not exist")
    server, worker, mlflow, *mirror = services(stack)
    start(server, stack.run_dir, log)
    write_prefect_profile(stack)  # a fresh shell needs only PREFECT_HOME (docs/flows.md)
    ensure_work_pool(stack)
    start(worker, stack.run_dir, log)
    if with_mlflow:
        start(mlflow, stack.run_dir, log)
    for service in mirror:
        start(service, stack.run_dir, log)
    return addresses(stack)


def down(stack: Stack, log: Callable[[str], None] = print) -> list[str]:
    """Stop every service this stack started; returns the names stopped."""
    stopped = [name for name in reversed(SERVICE_NAMES) if stop(stack.run_dir, name, log)]
    if not stopped:
        log("nothing to stop")
    return stopped


def addresses(stack: Stack) -> dict[str, str]:
    found = {"Prefect UI": stack.prefect_ui_url, "Prefect API": stack.api_url}
    if running(stack.run_dir, "mlflow-ui"):
        found["MLflow UI"] = stack.mlflow_ui_url
    mirror = running(stack.run_dir, "mirror")
    if mirror:
        found["Mirror"] = f"http://{HOST}:{stack.mirror_port} (serving {mirror['argv'][3]})"
    return found


def status(stack: Stack) -> dict[str, dict | None]:
    return {name: running(stack.run_dir, name) for name in SERVICE_NAMES}


def require_server(stack: Stack, timeout: float = 5.0) -> None:
    """A ServiceError of one line unless the stack's Prefect server answers."""
    require_api(stack.api_url, timeout)


def require_api(api_url: str, timeout: float = 5.0) -> None:
    """A ServiceError of one line unless a Prefect server answers at `api_url`."""
    url = f"{api_url}/health"
    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException as err:
        why = _reason(err)
    else:
        if resp.ok:
            return
        why = f"HTTP {resp.status_code}"
    raise ServiceError(
        f"no Prefect server answers at {api_url} ({why}); start the stack with "
        "`make services` (or `charflow services up`)"
    )


def _reason(err: BaseException) -> str:
    """`Connection refused` rather than urllib3's three-line repr."""
    import re

    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(err))
    return found.group(1).strip() if found else type(err).__name__


# -- a shell that talks to the stack ---------------------------------------------------------

PROFILE = "charflow"


def write_prefect_profile(stack: Stack) -> Path:
    """`<prefect home>/profiles.toml` with the active profile `charflow` pointing at this
    stack's API, so a shell with only PREFECT_HOME set runs `prefect deployment run ...`."""
    path = stack.prefect_home / "profiles.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f'active = "{PROFILE}"\n\n[profiles.{PROFILE}]\nPREFECT_API_URL = "{stack.api_url}"\n'
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def shell_env(stack: Stack) -> dict[str, str]:
    """What a shell exports to use this stack: `eval "$(charflow services env)"`."""
    env = stack.client_env()
    keep = ("CHARFLOW_HOME", "PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_UI_URL")
    return {k: env[k] for k in keep} | QUIET_ENV


# -- where the demo reads its sources ----------------------------------------------------------

# All probes together take at most this long (make demo's first step).
PROBE_SECONDS = 4.0
# ../shared/corpora beside the checkout: the mirror used when the network is unreachable.
DEFAULT_MIRROR = REPO.parent / "shared" / "corpora"


def probe(source: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None when `source` looks readable: a local path that exists, or a URL whose host
    accepts a TCP connection; otherwise why not, in a few words."""
    from urllib.parse import urlsplit

    parts = urlsplit(source)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme else source)
        return None if path.exists() else f"{path} does not exist"
    if not parts.hostname:
        return f"cannot tell where {source} is"
    port = parts.port or {"http": 80, "ssh": 22, "git": 9418}.get(parts.scheme, 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{parts.hostname}: {err.strerror or type(err).__name__}"


def probe_all(sources: dict[str, str], timeout: float = PROBE_SECONDS) -> dict[str, str | None]:
    """`probe` for every source at once; one that has not answered by `timeout` (a DNS
    lookup that hangs) counts as unreachable."""
    import threading

    found: dict[str, str | None] = {}

    def one(name: str, source: str) -> None:
        found[name] = probe(source, timeout)

    threads = [
        threading.Thread(target=one, args=item, daemon=True, name=f"probe-{item[0]}")
        for item in sources.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: found.get(name, f"no answer in {timeout:g} s") for name in sources}


@dataclass
class DemoSources:
    """Where each corpus of the demo is read from, and the line that says so."""

    mirror: Path | None  # a folder to serve over loopback; None: the live sources
    sources: dict[str, str]  # per-corpus sources besides the mirror (a Go tree)
    corpora: list[str]  # the corpora the demo can read
    left_out: dict[str, str]  # corpus -> why it cannot be read
    note: str  # one line for the terminal


def plan_sources(
    mirror: Path | None = None,
    local: dict[str, Path] | None = None,
    default_mirror: Path = DEFAULT_MIRROR,
    timeout: float = PROBE_SECONDS,
) -> DemoSources:
    """Decide where the demo reads every registered corpus from.

    `mirror` (MIRROR=): always that mirror. Otherwise each live source is probed (at most
    `timeout` seconds in all); if one does not answer, `default_mirror` is used when it
    exists. `local`: corpora read from a local folder in either case when it exists
    (kubernetes-go from GO_TREE). Raises ServiceError when a source is unreachable and
    there is no mirror."""
    from scrapers.registry import list_corpora

    specs = {spec.name: spec for spec in list_corpora()}
    local_found = {c: str(p) for c, p in (local or {}).items() if c in specs and Path(p).exists()}
    missing_local = {
        c: str(p) for c, p in (local or {}).items() if c in specs and c not in local_found
    }
    live = {name: s.default_source for name, s in specs.items() if name not in local_found}
    if mirror is None:
        problems = {k: v for k, v in probe_all(live, timeout).items() if v}
        if not problems:
            return DemoSources(
                None, local_found, sorted(specs), {},
                f"every source answers: reading the live sites ({len(live)} corpora)"
                + _local_note(local_found),
            )  # fmt: skip
        why = f"{len(problems)} of {len(live)} sources unreachable ({_first(problems)})"
        if not default_mirror.is_dir():
            raise ServiceError(
                f"{why} and no local mirror at {default_mirror}: set MIRROR=DIR (a folder "
                "laid out like shared/corpora) or connect to the internet"
            )
        mirror, origin = default_mirror, f"network unreachable: {why}"
    else:
        if not mirror.is_dir():
            raise ServiceError(f"mirror folder {mirror} does not exist")
        origin = "MIRROR"
    left_out = {}
    for name, spec in specs.items():
        if name in local_found:
            continue
        if spec.mirror_path and (mirror / spec.mirror_path).exists():
            continue
        where = f"{mirror / spec.mirror_path} is missing" if spec.mirror_path else "no mirror_path"
        left_out[name] = where + (
            f"; {missing_local[name]} does not exist either" if name in missing_local else ""
        )
    readable = sorted(set(specs) - set(left_out))
    note = f"{origin}; reading every source from the local mirror {mirror}" + _local_note(
        local_found
    )
    return DemoSources(mirror.resolve(), local_found, readable, left_out, note)


def _first(problems: dict[str, str]) -> str:
    name, why = sorted(problems.items())[0]
    more = f", +{len(problems) - 1} more" if len(problems) > 1 else ""
    return f"{name}: {why}{more}"


def _local_note(local: dict[str, str]) -> str:
    return "".join(f" ({name} from {path})" for name, path in sorted(local.items()))
