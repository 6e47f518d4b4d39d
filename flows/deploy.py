"""Deploy-time set-up: the `charflow` work pool, one global rate limit per scraped host,
then every deployment in prefect.yaml.

    charflow services deploy    # make deploy: pool + limits + `prefect --no-prompt deploy --all`

Rate limits are Prefect global concurrency limits named `host:<hostname>` with a slot
decay: every flow run on every worker that fetches from that host shares one budget.
"""

from __future__ import annotations

import os
import subprocess
import sys

from flows.host_limits import host_limit_name
from flows.services import HOST, REPO, Stack, ensure_work_pool

# Requests per second allowed to each scraped web site, across all workers.
HOST_RATE = 1.0
# Our own loopback mirror can take far more.
MIRROR_RATE = 50.0


def host_limits() -> dict[str, float]:
    """Each registered corpus's default host and the loopback mirror -> requests per second."""
    from scrapers.registry import list_corpora

    limits = {f"host:{HOST}": MIRROR_RATE}
    for spec in list_corpora():
        name = host_limit_name(spec.default_source)
        if name:
            limits.setdefault(name, HOST_RATE)
    return limits


def ensure_host_limits(stack: Stack) -> dict[str, float]:
    """Create or update the `host:*` global concurrency limits (rate limits)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    limits = host_limits()
    with SyncPrefectClient(stack.api_url) as client:
        for name, rate in limits.items():
            # `limit` slots decay at `rate` per second: bursts of at most `limit` requests.
            slots = max(1, int(rate))
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name, limit=slots, slot_decay_per_second=rate, active=True
                    )
                )
            else:
                client.update_global_concurrency_limit(
                    name,
                    GlobalConcurrencyLimitUpdate(
                        limit=slots, slot_decay_per_second=rate, active=True
                    ),
                )
    return limits


def deploy_all(stack: Stack) -> None:
    """`prefect --no-prompt deploy --all` from the checkout, against this stack."""
    prefect = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    subprocess.run(prefect, cwd=REPO, env={**os.environ, **stack.client_env()}, check=True)


def deploy(stack: Stack, log=print) -> None:
    """Everything `make deploy` does: work pool, host rate limits, every deployment."""
    ensure_work_pool(stack)
    for name, rate in ensure_host_limits(stack).items():
        log(f"rate limit {name}: {rate:g} requests/s")
    deploy_all(stack)
