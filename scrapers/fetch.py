"""The one polite HTTP fetcher every scraper uses.

- a User-Agent naming charflow, a timeout on every request;
- retries with exponential backoff on connection errors, 429 and 5xx, honouring Retry-After;
- robots.txt honoured (RFC 9309: a missing robots.txt allows everything, an unreachable one
  disallows everything);
- a per-host rate limit (1 request/s by default; None turns it off for loopback tests), and
  a `before_request` hook for a caller's own pacing (e.g. a limit shared across processes);
- a raw cache with conditional requests (ETag / If-Modified-Since): 304 -> the cached bytes,
  so a re-run re-downloads nothing unchanged;
- redirects followed only on the same host; off-host redirects are refused.

Raw bodies are stored as raw_dir/<sha256 of the URL>.body with a .json sidecar holding the
URL and its HTTP validators, so no URL can name a file outside raw_dir.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import threading
import time
import urllib.robotparser
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests

from scrapers.errors import IngestError

USER_AGENT = "charflow/0.1 (+https://github.com/charflow; corpus builder for char-level LMs)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
KEPT_HEADERS = ("etag", "last-modified", "content-type", "content-length", "date")
DEFAULT_PORTS = {"http": 80, "https": 443}


# -- URLs ---------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """Canonical form for de-duplication: lower-case scheme/host, no default port, no
    fragment, "/" for an empty path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host
    if parts.port and parts.port != DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    path = parts.path or ("/" if scheme in DEFAULT_PORTS else "")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def host_of(url: str) -> str:
    """scheme://host[:port] identity used for "same host" and rate limiting."""
    parts = urlsplit(normalize_url(url))
    return f"{parts.scheme}://{parts.netloc}"


def same_host(url: str, base: str) -> bool:
    return host_of(url) == host_of(base)


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https", "file")


def cache_key(url: str) -> str:
    return hashlib.sha256(normalize_url(url).encode("utf-8")).hexdigest()


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    url: str  # final URL (after same-host redirects)
    status: int | None  # last HTTP status (304 when served from the cache); None: no response
    path: Path | None  # the bytes on disk; None when there are none (see reason)
    from_cache: bool
    headers: dict = field(default_factory=dict)
    reason: str | None = None  # why there are no bytes: "HTTP 404 Not Found", robots, ...

    @property
    def ok(self) -> bool:
        return self.path is not None

    def read_bytes(self) -> bytes:
        if self.path is None:
            raise IngestError(f"{self.url}: {self.reason}")
        return self.path.read_bytes()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _describe(err: Exception) -> str:
    """A short reason for a connection failure: urllib3's messages run several lines."""
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    return f"{type(err).__name__} ({errno.group(0)})" if errno else type(err).__name__


class Fetcher:
    """One polite HTTP client (a requests.Session) with a raw cache; see the module doc."""

    def __init__(
        self,
        *,
        rate_limit: float | None = 1.0,
        timeout: float = 30,
        retries: int = 4,
        user_agent: str = USER_AGENT,
        respect_robots: bool = True,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        before_request: Callable[[str], None] | None = None,
    ):
        if rate_limit is not None and rate_limit <= 0:
            raise IngestError(f"rate limit must be > 0 requests/s or None, got {rate_limit}")
        self.rate_limit = rate_limit
        self.timeout = timeout
        self.retries = retries
        self.user_agent = user_agent
        self.respect_robots = respect_robots
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Called with the host (scheme://host[:port]) before every request, robots.txt and
        # retries included, after this fetcher's own pacing: it may wait, never skip.
        self.before_request = before_request
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.stats: Counter[str] = Counter()
        self._robots: dict[str, urllib.robotparser.RobotFileParser | str] = {}
        self._next_slot: dict[str, float] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public -----------------------------------------------------------------------

    def get(self, url: str, raw_dir: Path) -> FetchResult:
        """Fetch url into raw_dir (or a file:// URL in place). Never raises for HTTP errors:
        a result without bytes carries the reason (404, robots, retries exhausted, ...)."""
        url = normalize_url(url)
        scheme = urlsplit(url).scheme
        if scheme == "file":
            return self._get_file(url)
        if scheme not in ("http", "https"):
            raise IngestError(f"cannot fetch {url!r}: only http, https and file URLs")
        if self.respect_robots and not self.allowed(url, raw_dir):
            self.stats["robots_disallowed"] += 1
            return FetchResult(url, None, None, False, reason=self._robots_reason(url))
        return self._get_http(url, Path(raw_dir))

    def allowed(self, url: str, raw_dir: Path) -> bool:
        """Whether robots.txt of url's host lets charflow fetch url."""
        rules = self._robots_for(url, Path(raw_dir))
        if isinstance(rules, str):
            return False
        return rules.can_fetch(self.user_agent, url)

    # -- internals --------------------------------------------------------------------

    def _get_file(self, url: str) -> FetchResult:
        path = Path(unquote(urlsplit(url).path))
        if not path.is_file():
            return FetchResult(url, 404, None, False, reason=f"file not found: {path}")
        return FetchResult(url, 200, path, False)

    def _robots_reason(self, url: str) -> str:
        rules = self._robots.get(host_of(url))
        return rules if isinstance(rules, str) else "disallowed by robots.txt"

    def _robots_for(self, url: str, raw_dir: Path):
        host = host_of(url)
        if host not in self._robots:
            result = self._get_http(host + "/robots.txt", raw_dir)
            rules = urllib.robotparser.RobotFileParser(host + "/robots.txt")
            if result.ok:
                text = result.path.read_bytes().decode("utf-8", errors="replace")
                rules.parse(text.splitlines())
            elif result.status is not None and 400 <= result.status < 500:
                rules.allow_all = True  # RFC 9309 2.3.1.3: unavailable -> no restrictions
            else:
                rules = f"robots.txt unreachable ({result.reason}); not crawling {host}"
            self._robots[host] = rules
        return self._robots[host]

    def _crawl_interval(self, host: str) -> float:
        if self.rate_limit is None:
            return 0.0
        interval = 1.0 / self.rate_limit
        rules = self._robots.get(host)
        if isinstance(rules, urllib.robotparser.RobotFileParser):
            delay = rules.crawl_delay(self.user_agent)
            if delay:
                interval = max(interval, float(delay))
        return interval

    def _wait_turn(self, host: str) -> None:
        interval = self._crawl_interval(host)
        if not interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_slot.get(host, now))
            self._next_slot[host] = start + interval
        if start > now:
            time.sleep(start - now)

    def _paths(self, url: str, raw_dir: Path) -> tuple[Path, Path]:
        key = cache_key(url)
        return raw_dir / f"{key}.body", raw_dir / f"{key}.json"

    def _cached(self, url: str, raw_dir: Path) -> tuple[Path, dict] | None:
        body, sidecar = self._paths(url, raw_dir)
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("url") != url or not body.is_file() or body.stat().st_size != meta["size"]:
            return None
        return body, meta

    def _get_http(self, url: str, raw_dir: Path) -> FetchResult:
        cached = self._cached(url, raw_dir)
        headers = {}
        if cached:
            validators = cached[1]["headers"]
            if "etag" in validators:
                headers["If-None-Match"] = validators["etag"]
            if "last-modified" in validators:
                headers["If-Modified-Since"] = validators["last-modified"]
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            response, failure = self._request(current, headers)
            if response is None:
                return FetchResult(current, None, None, False, reason=failure)
            with response:
                status = response.status_code
                if status in REDIRECT_STATUSES and "location" in response.headers:
                    target = normalize_url(urljoin(current, response.headers["location"]))
                    if not same_host(target, url):
                        self.stats["offhost_refused"] += 1
                        reason = f"redirect off host refused: {target}"
                        return FetchResult(current, status, None, False, reason=reason)
                    current = target
                    continue
                if status == 304:
                    if not cached:
                        return FetchResult(current, 304, None, False, reason="304 with no cache")
                    self.stats["not_modified"] += 1
                    return FetchResult(current, 304, cached[0], True, cached[1]["headers"])
                if status >= 400:
                    self.stats[f"http_{status}"] += 1
                    reason = f"HTTP {status} {response.reason or ''}".strip()
                    if failure:
                        reason += f" after {self.retries} retries"
                    return FetchResult(current, status, None, False, dict(response.headers), reason)
                try:
                    path = self._store(url, current, response, raw_dir)
                except requests.RequestException as err:  # the body broke off mid-download
                    reason = f"download interrupted: {_describe(err)}"
                    return FetchResult(current, status, None, False, reason=reason)
                self.stats["downloaded"] += 1
                return FetchResult(current, status, path, False, dict(response.headers))
        reason = f"more than {MAX_REDIRECTS} redirects"
        return FetchResult(current, None, None, False, reason=reason)

    def _request(self, url: str, headers: dict):
        """GET with retries; returns (response, None), (last bad response, "retries
        exhausted") or (None, reason) when no response came at all."""
        host = host_of(url)
        for attempt in range(self.retries + 1):
            self._wait_turn(host)
            if self.before_request is not None:
                self.before_request(host)
            self.stats["requests"] += 1
            try:
                response = self.session.get(
                    url, headers=headers, timeout=self.timeout, allow_redirects=False, stream=True
                )
            except (requests.ConnectionError, requests.Timeout) as err:
                if attempt == self.retries:
                    return None, f"{_describe(err)} after {self.retries} retries"
                delay = None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response, None
                if attempt == self.retries:
                    return response, "retries exhausted"
                delay = _retry_after(response.headers.get("retry-after"))
                response.close()
            self.stats["retries"] += 1
            if delay is None:
                delay = self.backoff * 2**attempt
            time.sleep(min(delay, self.max_backoff))
        raise AssertionError("unreachable")

    def _store(self, url: str, final_url: str, response: requests.Response, raw_dir: Path) -> Path:
        """Stream the body to a temp file, then rename body and sidecar into place."""
        raw_dir.mkdir(parents=True, exist_ok=True)
        body, sidecar = self._paths(url, raw_dir)
        tmp = body.with_name(f"{body.name}.tmp-{uuid.uuid4().hex}")
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                for block in response.iter_content(1 << 16):
                    f.write(block)
                    digest.update(block)
                    size += len(block)
            os.replace(tmp, body)
        finally:
            tmp.unlink(missing_ok=True)
        kept = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        meta = {
            "url": url,
            "final_url": final_url,
            "status": response.status_code,
            "headers": kept,
            "size": size,
            "sha256": digest.hexdigest(),
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp_meta = sidecar.with_name(f"{sidecar.name}.tmp-{uuid.uuid4().hex}")
        tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_meta, sidecar)
        return body
