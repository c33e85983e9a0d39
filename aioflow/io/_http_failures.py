"""How an HTTP block fails well: the errors it raises and the circuit breaker.

Public names are re-exported by :mod:`aioflow.io.http` and carry that module's name.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .. import AioflowError, GraphError

__all__ = (
    "DEFAULT_BREAKER",
    "Breaker",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "HttpError",
)

BreakerState = Literal["closed", "open", "half_open"]


# -- errors -----------------------------------------------------------------------------------


class HttpError(AioflowError):
    """A request failed: no answer (connection error, timeout) or an error status.

    It reaches you as the ``__cause__`` of the item's :class:`~aioflow.BlockError` (whose message
    repeats this one's, so it names the URL and the status).

    Attributes:
        method: the HTTP method, upper case.
        url: the URL requested.
        status: the HTTP status of the last answer, or None when there was none.
        body: the start of the response body (at most 200 characters), ``""`` if none.
        reason: what went wrong in words: ``"Service Unavailable"``, ``"connection failed
            (ClientConnectorError: ...)"``, ``"no response within 5 s"``.
        retryable: whether the policy retries this kind of failure (connection errors,
            timeouts, 5xx, 429).
        retry_after: seconds the service asked to wait (``Retry-After``), or None.
        attempts: how many requests were sent for the item, this one included.
    """

    def __init__(
        self,
        method: str,
        url: str,
        *,
        status: int | None = None,
        reason: str = "",
        body: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(method, url, status)

    def __str__(self) -> str:
        what = f"{self.status} {self.reason}".strip() if self.status is not None else self.reason
        text = f"{self.method} {self.url}: {what}"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        if self.body:
            text += f": {self.body!r}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.method, self.url, self._state()))

    def _state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "body": self.body,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "attempts": self.attempts,
        }


def _rebuild(cls: type[HttpError], method: str, url: str, state: dict[str, Any]) -> HttpError:
    return cls(method, url, **state)


class CircuitOpenError(HttpError):
    """The block's circuit breaker is open: the request was not sent (the item failed fast).

    Not retried: while the service is down, failing at once is the point. ``retry_after`` says
    when the breaker lets a probe request through.
    """


# -- circuit breaker --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Breaker:
    """When a block's circuit breaker opens, and for how long.

    The breaker counts *failures*: requests that got no answer (connection error, timeout) or a
    5xx answer. Any other answer, 4xx and 429 included, shows the service is up and counts as a
    success. It opens when either condition holds:

    Args:
        consecutive: this many failures in a row (None: never on this ground). Catches a
            service that is down, after a handful of requests.
        failure_rate: at least this fraction of the last ``window`` requests failed (None:
            never on this ground). Catches a service that fails most of the time. Only judged
            on a full window, so a few early failures cannot open it.
        window: how many recent requests ``failure_rate`` looks at.
        cooldown: seconds the breaker stays open (items fail fast, nothing is sent) before it
            half-opens: the next request is a probe; if it succeeds the breaker closes, if not
            it opens for another ``cooldown``.

    With the defaults, a service failing one request in five at random opens the breaker after
    15 failures in a row (probability 0.2**15, about 3e-11 per request: once in some 30 billion
    requests) or 50 failures in 100 requests (about 2e-11); a refused connection opens it
    after 15 requests.

    Raises:
        GraphError: a value is out of range.

    >>> Breaker(consecutive=5, cooldown=1.0).window
    100
    """

    consecutive: int | None = 15
    failure_rate: float | None = 0.5
    window: int = 100
    cooldown: float = 5.0

    def __post_init__(self) -> None:
        if self.consecutive is not None and (
            isinstance(self.consecutive, bool)
            or not isinstance(self.consecutive, int)
            or self.consecutive < 1
        ):
            msg = f"Breaker: consecutive must be None or an int >= 1, got {self.consecutive!r}"
            raise GraphError(msg)
        if self.failure_rate is not None and (
            isinstance(self.failure_rate, bool)
            or not isinstance(self.failure_rate, int | float)
            or not 0 < self.failure_rate <= 1
        ):
            msg = (
                "Breaker: failure_rate must be None or a fraction in (0, 1], "
                f"got {self.failure_rate!r}"
            )
            raise GraphError(msg)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            msg = f"Breaker: window must be an int >= 1, got {self.window!r}"
            raise GraphError(msg)
        if (
            isinstance(self.cooldown, bool)
            or not isinstance(self.cooldown, int | float)
            or not math.isfinite(self.cooldown)
            or self.cooldown < 0
        ):
            msg = f"Breaker: cooldown must be a number of seconds >= 0, got {self.cooldown!r}"
            raise GraphError(msg)


DEFAULT_BREAKER = Breaker()

_CALL = 1
_PROBE = 2


class CircuitBreaker:
    """The breaker of one block during one run: its state and counts.

    Each request first asks :meth:`acquire` (a token, or None to fail fast), then reports with
    :meth:`record` (or :meth:`abandon` if it ended with no outcome, cancelled). A block made
    with ``breaker=None`` gets one that never opens.

    Attributes:
        policy: the :class:`Breaker`, or None.
        opened: how many times it opened.
        rejected: requests failed fast while it was open.
        consecutive_failures: failures in a row right now.

    >>> cb = CircuitBreaker(Breaker(consecutive=2, cooldown=60.0))
    >>> for _ in range(2):
    ...     cb.record(cb.acquire(), ok=False)
    >>> cb.state, cb.acquire()
    ('open', None)
    """

    def __init__(
        self, policy: Breaker | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._state: BreakerState = "closed"
        self._outcomes: deque[bool] = deque(maxlen=policy.window if policy else 1)
        self._failures = 0  # failures among _outcomes
        self._opened_at = 0.0
        self._probing = False
        self.consecutive_failures = 0
        self.opened = 0
        self.rejected = 0
        self.last_reason = ""

    @property
    def state(self) -> BreakerState:
        """``"closed"`` (requests go), ``"open"`` (they fail fast) or ``"half_open"`` (the
        cool-down is over: the next request is a probe, or one is in flight)."""
        if self._state == "open" and self.retry_in() == 0.0:
            return "half_open"
        return self._state

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0.0 unless it is open)."""
        if self._state != "open" or self.policy is None:
            return 0.0
        return max(0.0, self._opened_at + self.policy.cooldown - self._clock())

    def acquire(self) -> int | None:
        """May a request go now? A token for :meth:`record`, or None: fail it fast."""
        if self._state == "closed":
            return _CALL
        if self._state == "open" and self.retry_in() == 0.0:
            self._state = "half_open"
            self._probing = True
            return _PROBE
        self.rejected += 1
        return None

    def record(self, token: int | None, *, ok: bool) -> None:
        """Report how a request that :meth:`acquire` let through went."""
        if token is None or self.policy is None:
            return
        if token == _PROBE:
            self._probing = False
            if ok:
                self._close()
            else:
                self._open("the probe request failed")
            return
        if self._state != "closed":
            return  # started before the breaker opened: the probe decides now
        if ok:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and not outcomes[0]:
            self._failures -= 1
        outcomes.append(ok)
        if not ok:
            self._failures += 1
        policy = self.policy
        if policy.consecutive is not None and self.consecutive_failures >= policy.consecutive:
            self._open(f"{self.consecutive_failures} failures in a row")
        elif (
            policy.failure_rate is not None
            and len(outcomes) == policy.window
            and self._failures >= policy.failure_rate * policy.window
        ):
            self._open(f"{self._failures} failures in the last {policy.window} requests")

    def abandon(self, token: int | None) -> None:
        """A request ended with no outcome (cancelled): if it was the probe, allow another."""
        if token == _PROBE and self._probing:
            self._probing = False
            self._state = "open"  # cool-down already over: the next request probes

    def _open(self, reason: str) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self.opened += 1
        self.last_reason = reason

    def _close(self) -> None:
        self._state = "closed"
        self._outcomes.clear()
        self._failures = 0
        self.consecutive_failures = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} opened={self.opened} rejected={self.rejected}>"


for _public in (HttpError, CircuitOpenError, Breaker, CircuitBreaker):
    _public.__module__ = "aioflow.io.http"
