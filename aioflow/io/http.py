"""Blocks that call web services over HTTP, on aiohttp.

:func:`post` (and :func:`request`, :func:`get`, :func:`put`, :func:`delete`) make a block that
sends one request per item and emits the parsed response::

    import aioflow as af
    from aioflow.io import http

    describe = http.post("http://127.0.0.1:8000/describe", retry=af.Retry(attempts=4))
    pipe = af.Pipeline(decode, describe)

What the block does for you:

- **One session per run.** ``setup`` opens an :class:`aiohttp.ClientSession` whose connector
  holds at most ``workers`` connections (the block never has more requests in flight than that);
  ``teardown`` closes it, however the run ends.
- **HTTP-aware retries** with ``retry=af.Retry(...)``: connection errors, timeouts, 5xx and 429
  are retried with exponential backoff and jitter (``Retry.delay``), waiting at least as long as
  the service's ``Retry-After`` asks; any other 4xx fails at once (sending the same request again
  would get the same answer).
- **A circuit breaker** (:class:`Breaker`): after many failures in a row, or a failure rate of
  one half over the last 100 requests, the block stops calling the service for ``cooldown``
  seconds and fails items fast (:class:`CircuitOpenError`); then one probe request decides
  whether to close it again. The defaults never open on sporadic failures.
- **Errors that say what happened**: an :class:`HttpError` (method, URL, status, body excerpt,
  attempts) that the runner wraps in an :class:`~aioflow.BlockError`, so the item fails, goes
  to ``dead_letter=``, or is skipped per the block options.

Retries live in the block: leave the core ``on_error`` at ``"raise"`` or ``"skip"`` (an
``af.Retry`` there is refused, since it would retry every HTTP retry sequence again and multiply
the attempts).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import aiohttp

from .. import Block, GraphError, Retry
from ._http_failures import (
    DEFAULT_BREAKER,
    Breaker,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    HttpError,
)

__all__ = (
    "DEFAULT_BREAKER",
    "Breaker",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "HttpBlock",
    "HttpError",
    "HttpStatistics",
    "Request",
    "Response",
    "ResponseMode",
    "delete",
    "get",
    "parse_retry_after",
    "post",
    "put",
    "request",
)

logger = logging.getLogger("aioflow")

ResponseMode = Literal["auto", "json", "text", "bytes", "full"]

_RESPONSE_MODES = ("auto", "json", "text", "bytes", "full")
_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_EXCERPT = 200


# -- requests and responses -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, as a ``build`` function returns it (or as an item).

    Every field left as None takes the block's value: ``url`` and ``method`` those given to
    :func:`request`; ``headers`` are added to the block's.

    Args:
        url: the URL.
        method: the HTTP method.
        json: a body sent as JSON (None: no JSON body; to send a JSON ``null``, use
            ``data="null"`` with a ``Content-Type`` header).
        data: a raw body: ``bytes`` (sent as ``application/octet-stream``) or ``str`` (as
            ``text/plain; charset=utf-8``), unless ``headers`` say otherwise.
        params: query parameters.
        headers: extra headers for this request.

    Raises:
        TypeError: both ``json`` and ``data`` are given.
    """

    url: str | None = None
    method: str | None = None
    json: Any = None
    data: bytes | str | None = None
    params: Mapping[str, str | int | float] | None = None
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.json is not None and self.data is not None:
            msg = "Request: give a body as json= or as data=, not both"
            raise TypeError(msg)


_REQUEST_FIELDS = frozenset(f.name for f in fields(Request))


@dataclass(frozen=True, slots=True)
class Response:
    """What a block made with ``response="full"`` emits.

    Attributes:
        status: the HTTP status.
        headers: the response headers (the first value of a repeated header).
        body: the body, parsed as with ``response="auto"``.
        url: the final URL (after redirects).
    """

    status: int
    headers: Mapping[str, str]
    body: Any
    url: str


@dataclass(frozen=True, slots=True)
class HttpStatistics:
    """A snapshot of an HTTP block's own counters (the core's are in ``pipe.statistics()``).

    Attributes:
        requests: requests sent (every attempt counts).
        responses_by_status: status -> how many answers had it.
        retried: requests sent again after a failed attempt (not items). A retry that the
            open breaker refused was not sent: it counts in ``rejected``, not here.
        connection_errors: attempts that got no connection or lost it.
        timeouts: attempts that got no answer in time.
        rejected: requests the open breaker refused (nothing sent): items failed fast,
            first attempts or retries.
        breaker: the breaker's state now.
        breaker_opened: how many times the breaker opened.
    """

    requests: int = 0
    responses_by_status: Mapping[int, int] = field(default_factory=dict)
    retried: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    rejected: int = 0
    breaker: BreakerState = "closed"
    breaker_opened: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (for JSON); status codes become strings."""
        return {
            "requests": self.requests,
            "responses_by_status": {str(k): v for k, v in self.responses_by_status.items()},
            "retried": self.retried,
            "connection_errors": self.connection_errors,
            "timeouts": self.timeouts,
            "rejected": self.rejected,
            "breaker": self.breaker,
            "breaker_opened": self.breaker_opened,
        }


async def _sleep_at_least(seconds: float) -> None:
    """Sleep until ``seconds`` have passed on the monotonic clock, never less.

    A Retry-After is a promise to the service. uvloop's timers count from the loop's cached
    clock (read at the top of the iteration) in whole milliseconds, so a plain
    ``asyncio.sleep(1)`` can end a fraction of a millisecond before one second has passed.
    """
    deadline = time.monotonic() + seconds
    await asyncio.sleep(seconds)
    left = deadline - time.monotonic()
    if left > 0:  # early by under a millisecond: a millisecond more is always enough
        await asyncio.sleep(left + 0.001)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Decimal seconds (``"0.5"``) are accepted too. A date in the past gives 0.0.

    Args:
        value: the header's value, or None.
        now: the current time as a Unix timestamp (default: ``time.time()``).

    Returns:
        The delay in seconds, or None if the header is missing or unreadable.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.UTC)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _decode(body: bytes, charset: str | None) -> str:
    return body.decode(charset or "utf-8", errors="replace")


def _excerpt(body: bytes, charset: str | None) -> str:
    text = _decode(body[: _EXCERPT * 4], charset).strip()
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


@dataclass(slots=True)
class _Prepared:
    """A request ready to send (and to send again on retry)."""

    method: str
    url: str
    data: bytes | str | None
    params: Mapping[str, str | int | float] | None
    headers: dict[str, str] | None


# -- the block --------------------------------------------------------------------------------


class HttpBlock(Block):
    """A block that sends one HTTP request per item and emits the parsed response.

    Made by :func:`request`, :func:`post`, :func:`get`, :func:`put` and :func:`delete`; see
    :func:`request` for the arguments.

    Attributes (read them during or after a run; they restart at each run):
        breaker: the :class:`CircuitBreaker` (``blk.breaker.state``).
        requests: requests sent, every attempt included.
        responses_by_status: ``{status: count}`` of the answers.
        retried, connection_errors, timeouts, rejected: see :class:`HttpStatistics`.
        session: the run's :class:`aiohttp.ClientSession` (None outside a run).
    """

    def __init__(
        self,
        method: str,
        url: str | None = None,
        *,
        build: Callable[[Any], Request | Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        response: ResponseMode = "auto",
        retry: Retry | None = None,
        timeout: float | aiohttp.ClientTimeout = 10.0,
        breaker: Breaker | None = DEFAULT_BREAKER,
        workers: int = 8,
        session: Callable[[], aiohttp.ClientSession] | None = None,
        **options: Any,
    ) -> None:
        given: object = method  # checked at run time too: users call this without a type checker
        method_name = method.upper() if isinstance(given, str) else ""
        options.setdefault("name", f"http_{method_name.lower()}" if method_name else "http")
        name = options["name"]

        def bad(what: str, expected: str, found: object) -> GraphError:
            return GraphError(f"block {name!r}: {what} must be {expected}, got {found!r}")

        if not method_name.isalpha():
            raise bad("method", "an HTTP method such as 'POST'", method)
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise bad("url", "None or an http:// or https:// URL", url)
        if build is not None and not callable(build):
            raise bad("build", "None or a callable item -> Request or dict", build)
        if response not in _RESPONSE_MODES:
            raise bad("response", f"one of {', '.join(map(repr, _RESPONSE_MODES))}", response)
        if retry is not None and not isinstance(retry, Retry):
            raise bad("retry", "None or af.Retry(attempts, backoff)", retry)
        if breaker is not None and not isinstance(breaker, Breaker):
            raise bad("breaker", "None or http.Breaker(...)", breaker)
        if session is not None and not callable(session):
            raise bad("session", "None or a callable that makes an aiohttp.ClientSession", session)
        if isinstance(timeout, aiohttp.ClientTimeout):
            client_timeout = timeout
        elif (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise bad("timeout", "a number of seconds > 0 or an aiohttp.ClientTimeout", timeout)
        else:
            client_timeout = aiohttp.ClientTimeout(total=timeout)
        if isinstance(options.get("on_error"), Retry):
            msg = (
                f"block {name!r}: pass the retry policy as retry=af.Retry(...), not as "
                "on_error: the block's own retries know which HTTP failures to retry (5xx, 429, "
                "timeouts, connection errors) and honour Retry-After; a core retry on top would "
                "repeat every retry sequence and multiply the attempts. on_error may be 'raise' "
                "or 'skip'"
            )
            raise GraphError(msg)
        super().__init__(workers=workers, **options)
        self.method = method_name
        self.url = url
        self.build = build
        self.headers = dict(headers or {})
        self.response = response
        self.retry = retry
        self.client_timeout = client_timeout
        self.breaker_policy = breaker
        self._session_factory = session
        self.session: aiohttp.ClientSession | None = None
        self._reset()

    def _reset(self) -> None:
        self.breaker = CircuitBreaker(self.breaker_policy)
        self.requests = 0
        self.responses_by_status: dict[int, int] = {}
        self.retried = 0
        self.connection_errors = 0
        self.timeouts = 0

    @property
    def rejected(self) -> int:
        """Requests the open breaker refused (first attempts or retries); nothing was sent."""
        return self.breaker.rejected

    def http_statistics(self) -> HttpStatistics:
        """A frozen snapshot of the HTTP counters and the breaker's state."""
        return HttpStatistics(
            requests=self.requests,
            responses_by_status=dict(self.responses_by_status),
            retried=self.retried,
            connection_errors=self.connection_errors,
            timeouts=self.timeouts,
            rejected=self.breaker.rejected,
            breaker=self.breaker.state,
            breaker_opened=self.breaker.opened,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def setup(self) -> None:
        """Open the run's session: at most ``workers`` connections, the block's timeout."""
        self._reset()
        if self._session_factory is not None:
            self.session = self._session_factory()
            return
        connector = aiohttp.TCPConnector(limit=self.options.workers, limit_per_host=0)
        self.session = aiohttp.ClientSession(connector=connector)

    async def teardown(self) -> None:
        """Close the session (its connections with it)."""
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    # -- one item -----------------------------------------------------------------------------

    async def process(self, item: Any) -> Any:
        """Send the item's request, retrying per policy; return the parsed response.

        Raises:
            HttpError: no answer or an error status, after the retries the policy allows.
            CircuitOpenError: the breaker is open; nothing was sent.
            TypeError: the item cannot be made into a request.
        """
        req = self._prepare(item)
        session = self.session
        if session is None:
            msg = f"block {self.block_name!r}: process() called outside a run (no session)"
            raise RuntimeError(msg)
        policy = self.retry
        attempts = policy.attempts if policy is not None else 1
        breaker = self.breaker
        attempt = 0
        while True:
            attempt += 1
            token = breaker.acquire()
            if token is not None and attempt > 1:
                self.retried += 1  # counted once really sent: the breaker may refuse a retry
            if token is None:
                wait = breaker.retry_in()
                raise CircuitOpenError(
                    req.method,
                    req.url,
                    reason=(
                        f"circuit open ({breaker.last_reason}); not sent, next probe in "
                        f"{wait:.1f} s"
                    ),
                    retry_after=wait,
                    attempts=attempt - 1,
                )
            try:
                result = await self._send(session, req)
            except HttpError as exc:
                error = exc
            except BaseException:
                breaker.abandon(token)
                raise
            else:
                self._record(token, ok=True)
                return result
            # Only a missing answer or a 5xx says the service is unwell; a 4xx (429 included)
            # is an answer, and a request we could not even make says nothing about it.
            self._record(token, ok=not error.retryable or error.status == 429)
            error.attempts = attempt
            if not error.retryable or policy is None or attempt >= attempts:
                raise error
            delay = policy.delay(attempt)
            if error.retry_after is not None:
                if error.retry_after > policy.max_backoff:
                    error.reason += (
                        f" (Retry-After {error.retry_after:g} s is longer than the policy's "
                        f"max_backoff of {policy.max_backoff:g} s: not retried)"
                    )
                    raise error
                delay = max(delay, error.retry_after)
            logger.debug(
                "block %r: %s; retry %d in %.3f s",
                self.block_name,
                error,
                attempt,
                delay,
                extra={"block": self.block_name},
            )
            await _sleep_at_least(delay)

    def _record(self, token: int, *, ok: bool) -> None:
        breaker = self.breaker
        before = breaker.state
        breaker.record(token, ok=ok)
        after = breaker.state
        if after == before:
            return
        if after == "open":
            logger.warning(
                "block %r: circuit breaker opened (%s): items fail fast for %g s",
                self.block_name,
                breaker.last_reason,
                breaker.policy.cooldown if breaker.policy else 0.0,
                extra={"block": self.block_name},
            )
        elif after == "closed":
            logger.info(
                "block %r: circuit breaker closed: the probe request succeeded",
                self.block_name,
                extra={"block": self.block_name},
            )

    def _prepare(self, item: Any) -> _Prepared:
        """Make the request of ``item``: from ``build``, a Request item, or the default rules."""
        if self.build is not None:
            made: object = self.build(item)
            if isinstance(made, Request):
                req = made
            elif isinstance(made, Mapping):
                unknown = sorted(set(made) - _REQUEST_FIELDS)
                if unknown:
                    msg = (
                        f"block {self.block_name!r}: build() returned unknown keys {unknown}; "
                        f"the keys are {', '.join(sorted(_REQUEST_FIELDS))}"
                    )
                    raise TypeError(msg)
                req = Request(**made)
            else:
                msg = (
                    f"block {self.block_name!r}: build() must return an http.Request or a dict, "
                    f"got {type(made).__name__}"
                )
                raise TypeError(msg)
        elif isinstance(item, Request):
            req = item
        elif self.url is None:
            if not isinstance(item, str):
                msg = (
                    f"block {self.block_name!r} has no url, so each item must be a URL (str) "
                    f"or an http.Request; got {type(item).__name__} (or pass build=...)"
                )
                raise TypeError(msg)
            req = Request(url=item)
        else:
            req = self._default_request(item)
        method = (req.method or self.method).upper()
        url = req.url or self.url
        if url is None:
            msg = f"block {self.block_name!r}: the request has no URL and the block has none"
            raise TypeError(msg)
        headers = {**self.headers, **(req.headers or {})} or None  # a new dict: changed below
        data: bytes | str | None = req.data
        if req.json is not None:
            data = self._dump_json(req.json)
            headers = headers or {}
            headers.setdefault("Content-Type", "application/json")
        return _Prepared(method, url, data, req.params, headers)

    def _default_request(self, item: Any) -> Request:
        if self.method in _BODYLESS:
            if item is None:
                return Request()
            if isinstance(item, Mapping):
                return Request(params=item)
            msg = (
                f"block {self.block_name!r}: for {self.method} the item is the query parameters "
                f"(a dict) or None; got {type(item).__name__} (pass build=... to make the "
                "request from it)"
            )
            raise TypeError(msg)
        if isinstance(item, bytes | bytearray | memoryview):
            return Request(data=bytes(item))
        if isinstance(item, str):
            return Request(data=item)
        if item is None:
            return Request()
        return Request(json=item)

    def _dump_json(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            msg = (
                f"block {self.block_name!r}: cannot send a {type(value).__name__} as JSON "
                f"({exc}); send bytes, or pass build=... to make the request"
            )
            raise TypeError(msg) from exc

    async def _send(self, session: aiohttp.ClientSession, req: _Prepared) -> Any:
        """One attempt. Returns the parsed body, or raises HttpError (retryable or not)."""
        self.requests += 1
        try:
            async with session.request(
                req.method,
                req.url,
                data=req.data,
                params=req.params,
                headers=req.headers,
                timeout=self.client_timeout,
            ) as resp:
                status = resp.status
                self.responses_by_status[status] = self.responses_by_status.get(status, 0) + 1
                body = await resp.read()
                content_type = resp.content_type
                charset = resp.charset
                resp_headers = resp.headers
                final_url = str(resp.url)
                reason = resp.reason or ""
        except TimeoutError as exc:  # aiohttp's timeouts derive from it
            self.timeouts += 1
            raise HttpError(
                req.method, req.url, reason=self._timeout_text(), retryable=True
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            self.connection_errors += 1
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise HttpError(
                req.method, req.url, reason=f"connection failed ({detail})", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:  # a bad URL, too many redirects, ...
            raise HttpError(
                req.method, req.url, reason=f"{type(exc).__name__}: {exc}", retryable=False
            ) from exc
        if status >= 400:
            retryable = status == 429 or status >= 500
            raise HttpError(
                req.method,
                req.url,
                status=status,
                reason=reason,
                body=_excerpt(body, charset),
                retryable=retryable,
                retry_after=parse_retry_after(resp_headers.get("Retry-After"))
                if retryable
                else None,
            )
        mode = self.response
        if mode == "bytes":
            return body
        if mode == "text":
            return _decode(body, charset)
        if mode == "json":
            try:
                return json.loads(body)
            except ValueError as exc:
                raise HttpError(
                    req.method,
                    req.url,
                    status=status,
                    reason=f"{reason}, but the body is not JSON ({exc})",
                    body=_excerpt(body, charset),
                ) from exc
        parsed = self._auto(req, status, reason, body, content_type, charset)
        if mode == "full":
            return Response(status, dict(resp_headers), parsed, final_url)
        return parsed

    def _auto(
        self,
        req: _Prepared,
        status: int,
        reason: str,
        body: bytes,
        content_type: str,
        charset: str | None,
    ) -> Any:
        """``response="auto"``: JSON for a JSON content type, text for text, else bytes."""
        if not body:
            return None
        if _is_json(content_type):
            try:
                return json.loads(body)
            except ValueError as exc:
                raise HttpError(
                    req.method,
                    req.url,
                    status=status,
                    reason=f"{reason}, but its JSON body does not parse ({exc})",
                    body=_excerpt(body, charset),
                ) from exc
        if content_type.startswith("text/") or charset is not None:
            return _decode(body, charset)
        return body

    def _timeout_text(self) -> str:
        total = self.client_timeout.total
        return f"no response within {total:g} s" if total else "timed out"


# -- constructors -----------------------------------------------------------------------------


def request(
    method: str,
    url: str | None = None,
    *,
    build: Callable[[Any], Request | Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    response: ResponseMode = "auto",
    retry: Retry | None = None,
    timeout: float | aiohttp.ClientTimeout = 10.0,
    breaker: Breaker | None = DEFAULT_BREAKER,
    workers: int = 8,
    session: Callable[[], aiohttp.ClientSession] | None = None,
    **options: Any,
) -> HttpBlock:
    """A block that sends an HTTP request for each item and emits the parsed response.

    What is sent for an item, unless ``build`` says otherwise:

    - POST, PUT, PATCH: the item is the body: ``bytes`` as is (``application/octet-stream``),
      ``str`` as text, None as no body, anything else as JSON.
    - GET, DELETE, HEAD, OPTIONS: the item is the query parameters (a dict), or None.
    - With ``url=None``, each item is the URL (a str); with an :class:`Request` item, that
      request (its None fields take the block's values).

    Args:
        method: the HTTP method (``"POST"``).
        url: the URL of every request, or None (see above).
        build: a function item -> :class:`Request` (or a dict with its fields: ``url``,
            ``method``, ``json``, ``data``, ``params``, ``headers``), for anything else.
        headers: headers sent with every request.
        response: what to emit: ``"auto"`` (JSON when the answer says it is JSON, text for
            ``text/*`` or a charset, else bytes; None for an empty body), ``"json"`` (parse
            whatever the content type), ``"text"``, ``"bytes"``, or ``"full"``
            (a :class:`Response` with status, headers and the body as ``"auto"`` parses it).
        retry: ``af.Retry(attempts, backoff, ...)``: retry connection errors, timeouts, 5xx and
            429 with exponential backoff and jitter, waiting at least the ``Retry-After`` the
            service asks for (a longer wait than ``max_backoff`` fails the item at once); other
            4xx fail at once. None (default): one attempt.
        timeout: seconds for each attempt (connecting, sending, reading the whole answer), or
            an :class:`aiohttp.ClientTimeout`. It replaces the core ``timeout`` block option,
            which would bound all attempts of an item together.
        breaker: the circuit breaker's policy (:class:`Breaker`), or None for none.
        workers: requests in flight at once; also the connection pool's size.
        session: a function that makes the run's :class:`aiohttp.ClientSession` (for TLS
            settings, auth, cookies); the block closes it at the end of the run, and still
            applies ``timeout`` and ``headers`` to each request. Default: a session with
            ``workers`` connections.
        **options: block options: ``name`` (default ``"http_post"`` etc.), ``queue_size``,
            ``ordered``, ``on_error`` (``"raise"`` or ``"skip"``), ``dead_letter``,
            ``max_age``, ``key``, ``batch``...

    Returns:
        An :class:`HttpBlock`, an ``af.Block`` to put in a pipeline.

    Raises:
        GraphError: a bad argument or option, or ``on_error=af.Retry(...)`` (use ``retry=``).

    >>> blk = request("PATCH", "http://127.0.0.1:8000/items", workers=2, name="patch_items")
    >>> blk.block_name, blk.options.workers
    ('patch_items', 2)
    """
    return HttpBlock(
        method,
        url,
        build=build,
        headers=headers,
        response=response,
        retry=retry,
        timeout=timeout,
        breaker=breaker,
        workers=workers,
        session=session,
        **options,
    )


def post(url: str | None = None, **kwargs: Any) -> HttpBlock:
    """``request("POST", url, ...)``: POST each item (dict/list as JSON, bytes as the body) and
    emit the parsed response. See :func:`request` for the arguments.

    >>> import aioflow as af
    >>> post("http://127.0.0.1:8000/detect", retry=af.Retry(attempts=3)).block_name
    'http_post'
    """
    return request("POST", url, **kwargs)


def get(url: str | None = None, **kwargs: Any) -> HttpBlock:
    """``request("GET", url, ...)``: the item is the query parameters (a dict), or the URL
    itself when ``url`` is None. See :func:`request`."""
    return request("GET", url, **kwargs)


def put(url: str | None = None, **kwargs: Any) -> HttpBlock:
    """``request("PUT", url, ...)``: the item is the body, as for :func:`post`."""
    return request("PUT", url, **kwargs)


def delete(url: str | None = None, **kwargs: Any) -> HttpBlock:
    """``request("DELETE", url, ...)``: the item is the query parameters, or None."""
    return request("DELETE", url, **kwargs)
