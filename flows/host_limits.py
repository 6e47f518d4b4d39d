"""The names of the per-host rate limits: Prefect global concurrency limits `host:<hostname>`.

deploy.py creates them and tasks.py takes a slot of one before every request; both name
them here, so neither imports the other.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def host_limit_name(url: str) -> str | None:
    """`host:paulgraham.com` for a URL; None for local paths (nothing to be polite to)."""
    host = urlsplit(url).hostname
    return f"host:{host}" if host else None
