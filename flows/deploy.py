"""Deploy-time set-up: the `charflow` work pool, one global rate limit per scraped host,
then every deployment generated from the corpus registry (flows/deployments.py).

    charflow services deploy    # make deploy: pool + limits + deployments
    charflow deploy             # the deployments alone (--write FILE: as a prefect.yaml)

Rate limits are Prefect global concurrency limits named `host:<hostname>` with a slot
decay: every flow run on every worker that fetches from that host shares one budget.
Loopback and local sources (the offline mirror, file: URLs, folders) have none.
"""

from __future__ import annotations

import contextlib

from flows.host_limits import host_limit_name
from flows.services import HOST, WORK_POOL, ServiceError, Stack, ensure_work_pool, require_server

# Requests per second allowed to each scraped web site, across all workers.
HOST_RATE = 1.0
# Hosts that are this machine: our own mirror needs no politeness.
LOOPBACK_HOSTS = (HOST, "localhost", "::1")


def host_limits() -> dict[str, float]:
    """Each registered corpus's default web host -> requests per second."""
    from scrapers.registry import list_corpora

    limits: dict[str, float] = {}
    for spec in list_corpora():
        name = host_limit_name(spec.default_source)
        if name and name.removeprefix("host:") not in LOOPBACK_HOSTS:
            limits.setdefault(name, HOST_RATE)
    return limits


def ensure_host_limits(stack: Stack) -> dict[str, float]:
    """Create or update the `host:*` global concurrency limits (rate limits); switch off a
    loopback limit an older charflow created (the mirror is not rate limited)."""
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
        for host in LOOPBACK_HOSTS:
            with contextlib.suppress(ObjectNotFound):
                client.update_global_concurrency_limit(
                    f"host:{host}", GlobalConcurrencyLimitUpdate(active=False)
                )
    return limits


def deploy_all(stack: Stack, log=print, work_pool: str = WORK_POOL) -> list[str]:
    """Every deployment of the registry's corpora (plug-ins included) and the demo."""
    from flows.deployments import apply, generate

    return apply(generate(), stack.api_url, work_pool=work_pool, log=log)


def deploy(stack: Stack, log=print, work_pool: str = WORK_POOL) -> list[str]:
    """Everything `make deploy` does: work pool, host rate limits, every deployment.
    A server that does not answer is one ServiceError, before anything is changed.
    Another `work_pool` (Docker, Kubernetes) must exist already."""
    require_server(stack)
    if work_pool == WORK_POOL:
        ensure_work_pool(stack)
    for name, rate in ensure_host_limits(stack).items():
        log(f"rate limit {name}: {rate:g} requests/s")
    return deploy_all(stack, log, work_pool)


__all__ = ["ServiceError", "deploy", "deploy_all", "ensure_host_limits", "host_limits"]
