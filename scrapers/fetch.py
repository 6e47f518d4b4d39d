"""The one polite HTTP fetcher every scraper uses.

- a User-Agent naming charflow, a timeout on every request;
- retries with exponential backoff on connection errors, 429 and 5xx, honouring Retry-After;
- robots.txt honoured (RFC 9309: a missing robots.txt allows everything, an unreachable one
  disallows everything);
- a per-host rate limit (1 request/s by default; None turns it off for loopback tests), and
  a `before_request` hook for a caller's own pacing (e.g. a limit shared across processes);
- a raw cache with conditional requests (ETag / If-Modified-Since): 304 -> the cached bytes,
  so a re-run re-downloads nothing unchanged;
- redirects followed only on the same host; off-host redirects are refused;
- bounds on every response, each a recorded skip (a FetchResult with a reason), never a hang
  or a swollen process: an overall `deadline` per request (60 s; requests' own timeout is
  per read, so a server dripping a byte at a time would otherwise hold a run forever),
  `max_wire_bytes` received (20 MB) and `max_body_bytes` once decompressed (100 MB; a
  100 KB gzip bomb inflates to gigabytes). Bodies are read and inflated in 64 KiB pieces;
- a local (file://) source is confined to its folder, as an HTTP source is to its host: a
  link that leads out of the folder of the page it is on (by `../` or through a symlink) is
  not on the same site.

Raw bodies are stored as raw_dir/<sha256 of the URL>.body with a .json sidecar holding the
URL and its HTTP validators, so no URL can name a file outside raw_dir.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.robotparser
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from scrapers.errors import IngestError

USER_AGENT = "charflow/0.1 (+https://github.com/charflow; corpus builder for char-level LMs)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
KEPT_HEADERS = ("etag", "last-modified", "content-type", "content-length", "date")
DEFAULT_PORTS = {"http": 80, "https": 443}
DEADLINE = 60.0  # seconds for one request, first byte sent to last byte read
MAX_WIRE_BYTES = 20_000_000  # body bytes received (before decompression)
MAX_BODY_BYTES = 100_000_000  # body bytes once decompressed (what lands in raw/)
CHUNK = 1 << 16  # bytes read, and bytes inflated, at a time
# Only encodings inflated here (in bounded pieces) are asked for: never br or zstd, which
# requests would otherwise advertise when their packages happen to be installed.
ACCEPT_ENCODING = "gzip, deflate"


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
    """Whether url is on the same site as base: the same scheme://host[:port], or for file
    URLs, inside the folder of base (a local source's "host" is its folder)."""
    if urlsplit(url).scheme == "file" and urlsplit(base).scheme == "file":
        return inside_source_folder(url, base)
    return host_of(url) == host_of(base)


def _file_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


def inside_source_folder(url: str, base: str) -> bool:
    """Whether the file url names lies inside the folder of the file base names, once `..`
    and symlinks are resolved: a link inside the folder that points out of it is outside."""
    folder = _file_path(base).parent.resolve()
    return _file_path(url).resolve().is_relative_to(folder)


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


def _megabytes(n: int) -> str:
    return f"{n / 1e6:g} MB"


class _Unread(Exception):
    """Why a body was not kept (over a cap, past the deadline, cut off): a skip's reason."""


def _inflater(encoding: str) -> _Inflate | None:
    """What inflates a body sent with this Content-Encoding (None: nothing to inflate);
    _Unread for an encoding this fetcher does not read."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return _Inflate(zlib.MAX_WBITS | 16, gzip=True)
    if name == "deflate":
        return _Inflate(zlib.MAX_WBITS)
    raise _Unread(f"unsupported Content-Encoding {encoding!r}")


class _Inflate:
    """zlib with max_length: no piece of output is larger than CHUNK, whatever the
    compression ratio (a 100 KB gzip bomb inflates 64 KiB at a time). Reads gzip bodies of
    several members, and "deflate" sent raw (without its zlib header), as urllib3 does."""

    def __init__(self, wbits: int, gzip: bool = False):
        self.wbits, self.gzip = wbits, gzip
        self.z = zlib.decompressobj(wbits)
        self.started = False  # some input was accepted
        self.later_member = False  # reading a gzip member after the first
        self.done = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The inflated bytes of the next piece of body, CHUNK bytes at most at a time."""
        more = True  # zlib may hold output back after a call that filled CHUNK
        while (data or more) and not self.done:
            if self.z.eof:  # the stream ended: a gzip body may hold another member
                if not self.gzip:
                    self.done = True
                    return
                self.z, self.later_member = zlib.decompressobj(self.wbits), True
            try:
                out = self.z.decompress(data, CHUNK)
            except zlib.error:
                if self.later_member:  # padding or junk after a whole member: the end
                    self.done = True
                    return
                if self.gzip or self.started or self.wbits < 0:
                    raise
                self.wbits = -zlib.MAX_WBITS  # "deflate" without its zlib header
                self.z = zlib.decompressobj(self.wbits)
                continue
            self.started = self.started or bool(data)
            if out:
                yield out
            data = self.z.unused_data if self.z.eof else self.z.unconsumed_tail
            more = len(out) == CHUNK


# -- the deadline -------------------------------------------------------------------------
#
# requests' timeout bounds each read, not the request: a server sending a byte every few
# seconds never trips it. A watchdog timer per request cuts the socket at the deadline
# (shutdown() wakes a read blocked in another thread), whether the read is of the status
# line, the headers or the body. Requests are made through connection classes that hand
# their socket to the watchdog of the request this thread is making.

_current = threading.local()


def _cut(sock) -> None:
    try:
        if isinstance(sock, socket.socket):
            # The plain socket's shutdown, also for an SSLSocket: no TLS goodbye to a server
            # that is dripping, and no TLS state pulled from under the reading thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):
        pass  # already closed


class _Watchdog:
    """Cuts one request off at its deadline (None: never)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.expired = False
        self._sock = None
        self._lock = threading.Lock()
        self._timer = None
        if seconds is not None:
            self.expires = time.monotonic() + seconds
            self._timer = threading.Timer(seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def watch(self, sock) -> None:
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            _cut(sock)

    def check(self) -> None:
        """Expire now if the deadline has passed (the timer may not have run yet)."""
        if self.seconds is not None and time.monotonic() >= self.expires:
            self._fire()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _cut(sock)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def reason(self, received: int) -> str:
        return f"deadline {self.seconds:g} s exceeded after {received} bytes"

    def __enter__(self) -> _Watchdog:
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def _watch_this_thread(sock) -> None:
    watchdog = getattr(_current, "watchdog", None)
    if watchdog is not None and sock is not None:
        watchdog.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args, **kwargs):
        _watch_this_thread(self.sock)  # connected and the request sent: now we wait
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args, **kwargs):
        _watch_this_thread(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter over pools of the connections above."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


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
        deadline: float | None = DEADLINE,
        max_wire_bytes: int = MAX_WIRE_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        if rate_limit is not None and rate_limit <= 0:
            raise IngestError(f"rate limit must be > 0 requests/s or None, got {rate_limit}")
        if deadline is not None and not deadline > 0:  # also refuses nan
            raise IngestError(f"deadline must be > 0 seconds or None, got {deadline}")
        for name, cap in (("max_wire_bytes", max_wire_bytes), ("max_body_bytes", max_body_bytes)):
            if not isinstance(cap, int) or cap <= 0:
                raise IngestError(f"{name} must be a positive number of bytes, got {cap!r}")
        self.rate_limit = rate_limit
        self.timeout = timeout
        self.retries = retries
        self.user_agent = user_agent
        self.respect_robots = respect_robots
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Bounds on one response (a skip with a reason when passed): seconds from sending
        # the request to the body's last byte (None: none), body bytes received, and body
        # bytes once inflated.
        self.deadline = deadline
        self.max_wire_bytes = max_wire_bytes
        self.max_body_bytes = max_body_bytes
        # Called with the host (scheme://host[:port]) before every request, robots.txt and
        # retries included, after this fetcher's own pacing: it may wait, never skip.
        self.before_request = before_request
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.headers["Accept-Encoding"] = ACCEPT_ENCODING
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, _WatchedAdapter())
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

    def _read_piece(self, response: requests.Response, watchdog: _Watchdog, received: int):
        """The next piece of body as sent (b"" at its end); _Unread past the deadline or
        when the body breaks off."""
        watchdog.check()
        if not watchdog.expired:
            try:
                # read1: what has arrived, up to CHUNK, rather than waiting for all of
                # CHUNK (urllib3 >= 2.3; read otherwise), so counts are of bytes received.
                read = getattr(response.raw, "read1", None) or response.raw.read
                piece = read(CHUNK, decode_content=False)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
                if not watchdog.expired:
                    self.stats["interrupted"] += 1
                    raise _Unread(f"download interrupted: {_describe(err)}") from None
            else:
                if not watchdog.expired:  # a cut socket reads as the end of the body
                    return piece
        self.stats["deadline_exceeded"] += 1
        raise _Unread(watchdog.reason(received))

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
            response, watchdog, failure = self._request(current, headers)
            if response is None:
                return FetchResult(current, None, None, False, reason=failure)
            with watchdog, response:
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
                    path = self._store(url, current, response, raw_dir, watchdog)
                except _Unread as err:  # over a cap, past the deadline, cut off
                    return FetchResult(current, status, None, False, reason=str(err))
                self.stats["downloaded"] += 1
                return FetchResult(current, status, path, False, dict(response.headers))
        reason = f"more than {MAX_REDIRECTS} redirects"
        return FetchResult(current, None, None, False, reason=reason)

    def _request(self, url: str, headers: dict):
        """GET with retries; returns (response, its watchdog, None), (last bad response,
        its watchdog, "retries exhausted") or (None, None, reason) when no response came at
        all. A request past its deadline is not retried: the server would only drip again."""
        host = host_of(url)
        for attempt in range(self.retries + 1):
            self._wait_turn(host)
            if self.before_request is not None:
                self.before_request(host)
            self.stats["requests"] += 1
            watchdog = _Watchdog(self.deadline)  # pacing above is ours: not on its clock
            _current.watchdog = watchdog
            try:
                response = self.session.get(
                    url, headers=headers, timeout=self.timeout, allow_redirects=False, stream=True
                )
            except BaseException as err:
                watchdog.cancel()
                if not isinstance(err, requests.RequestException):
                    raise  # Ctrl-C and bugs: no timer left behind to cut a later request
                if watchdog.expired:  # cut while waiting for the status line or headers
                    self.stats["deadline_exceeded"] += 1
                    return None, None, watchdog.reason(0)
                if not isinstance(err, requests.ConnectionError | requests.Timeout):
                    raise
                if attempt == self.retries:
                    return None, None, f"{_describe(err)} after {self.retries} retries"
                delay = None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response, watchdog, None
                if attempt == self.retries:
                    return response, watchdog, "retries exhausted"
                delay = _retry_after(response.headers.get("retry-after"))
                response.close()
                watchdog.cancel()
            finally:
                _current.watchdog = None
            self.stats["retries"] += 1
            if delay is None:
                delay = self.backoff * 2**attempt
            time.sleep(min(delay, self.max_backoff))
        raise AssertionError("unreachable")

    def _store(
        self, url: str, final_url: str, response: requests.Response, raw_dir: Path, watchdog
    ) -> Path:
        """Stream the body to a temp file, then rename body and sidecar into place.

        The body is read as sent and inflated here, a piece at a time, so that both size
        caps hold and memory stays bounded whatever the compression ratio; _Unread (with
        the reason, nothing kept) past a cap or the deadline, or when the body breaks off."""
        inflate = _inflater(response.headers.get("content-encoding", ""))
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_wire_bytes:
            self.stats["too_large"] += 1
            raise _Unread(
                f"Content-Length {_megabytes(int(length))} is over the "
                f"{_megabytes(self.max_wire_bytes)} cap (max_wire_bytes)"
            )
        raw_dir.mkdir(parents=True, exist_ok=True)
        body, sidecar = self._paths(url, raw_dir)
        tmp = body.with_name(f"{body.name}.tmp-{uuid.uuid4().hex}")
        digest, size, received = hashlib.sha256(), 0, 0
        try:
            with open(tmp, "wb") as f:
                while True:
                    piece = self._read_piece(response, watchdog, received)
                    if not piece:
                        break
                    received += len(piece)
                    if received > self.max_wire_bytes:
                        self.stats["too_large"] += 1
                        raise _Unread(
                            f"body over {_megabytes(self.max_wire_bytes)} on the wire "
                            f"(max_wire_bytes); stopped after {received} bytes"
                        )
                    try:
                        blocks = list(inflate.pieces(piece)) if inflate else [piece]
                    except zlib.error as err:
                        raise _Unread(f"cannot inflate the body: {err}") from None
                    for block in blocks:
                        size += len(block)
                        if size > self.max_body_bytes:
                            self.stats["too_large"] += 1
                            raise _Unread(
                                f"body over {_megabytes(self.max_body_bytes)} once inflated "
                                f"(max_body_bytes); stopped after {received} bytes received"
                            )
                        f.write(block)
                        digest.update(block)
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
