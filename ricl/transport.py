"""Talking to a server: one bounded retry policy, and JSON over HTTP that uses it.

Every server backend (an LM server, a Chroma server) retries through
``with_retries``: a few tries on a short, fixed schedule (tenacity), never a
hang, then a ``ServerUnavailableError`` that says how to start the server.
``JSONClient`` is the HTTP side (httpx) for servers ricl speaks to directly:
an answer that is not what was asked for is a ``ServerResponseError`` carrying
the HTTP status, and only the failures a restart can cure are retried.

It lives in the core because both ``ricl.server_lm`` and ``retrievers`` use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import tenacity

from ricl.errors import ServerResponseError, ServerUnavailableError

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds between tries: about 3.5 s in all before giving up
RETRY_STATUSES = frozenset({502, 503, 504})  # a proxy with no backend yet, a model still loading

_R = TypeVar("_R")


def with_retries(
    action: Callable[[], _R],
    *,
    server: str,
    what: str,
    remedy: str,
    is_transient: Callable[[BaseException], bool],
    delays: Sequence[float] = RETRY_DELAYS,
    before_retry: Callable[[], None] | None = None,
) -> _R:
    """``action()``, tried again after each of ``delays`` while what it raises ``is_transient``.

    Once the delays run out (one try more than delays), the last transient error
    becomes ``ServerUnavailableError``: "Could not reach {server} for {what}
    after N tries (error). {remedy}". Any other error passes at once.
    ``before_retry`` runs before every try but the first (to reconnect, say).
    """
    policy = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(len(delays) + 1),
        wait=_wait_after_try(delays),
        retry=tenacity.retry_if_exception(is_transient),
        before=_before_each_retry(before_retry),
        before_sleep=lambda state: log.warning(
            "Cannot reach %s for %s (%s); retrying in %.1fs", server, what,
            _reason(state.outcome.exception()), state.next_action.sleep),
        reraise=True,
    )
    try:
        return policy(action)
    except Exception as error:
        if not is_transient(error):
            raise
        raise ServerUnavailableError(
            f"Could not reach {server} for {what} after {len(delays) + 1} tries ({_reason(error)}). {remedy}"
        ) from None


def _wait_after_try(delays: Sequence[float]) -> Callable[[tenacity.RetryCallState], float]:
    # tenacity asks for the wait before it checks the stop, so the last try asks too: 0, unused.
    def wait(state: tenacity.RetryCallState) -> float:
        return delays[state.attempt_number - 1] if state.attempt_number <= len(delays) else 0.0
    return wait


def _before_each_retry(hook: Callable[[], None] | None) -> Callable[[tenacity.RetryCallState], None]:
    def before(state: tenacity.RetryCallState) -> None:
        if hook is not None and state.attempt_number > 1:
            hook()
    return before


def _reason(error: BaseException | None) -> str:
    return str(error) or type(error).__name__


class JSONClient:
    """JSON requests to one HTTP server (httpx), each retried by ``with_retries``.

    Retried: a refused or dropped connection, and a 502/503/504 answer. A timeout
    is not retried (the server is there, only slow) and raises
    ``ServerUnavailableError`` at once, ending in ``slow_remedy``. Any other
    error status, or an answer that is not JSON, is a ``ServerResponseError``.
    Safe to share between threads; connections are kept alive between requests.

    Args:
        server: the server as messages name it, e.g. ``"the LM server"``.
        remedy: what to do when it cannot be reached (how to start it).
        slow_remedy: what to do when it does not answer in time.
        timeout: seconds to wait for one response.
        headers: sent with every request.
        delays: seconds slept between tries.
    """

    def __init__(self, *, server: str, remedy: str, slow_remedy: str, timeout: float,
                 headers: Mapping[str, str] | None = None, delays: Sequence[float] = RETRY_DELAYS):
        self.server = server
        self.remedy = remedy
        self.slow_remedy = slow_remedy
        self.delays = tuple(delays)
        # Creating a client opens no connection: nothing is sent until the first request.
        self._http = httpx.Client(timeout=timeout, headers={"Accept": "application/json", **(headers or {})})

    def request(self, method: str, url: str, body: Any = None) -> Any:
        """The decoded JSON answer to ``method url`` with ``body`` (sent as JSON unless None)."""
        return with_retries(lambda: self._send(method, url, body), server=self.server,
                            what=f"{method} {url}", remedy=self.remedy, is_transient=is_unreachable,
                            delays=self.delays)

    def close(self) -> None:
        """Close the kept-alive connections; no request can be sent after."""
        self._http.close()

    def _send(self, method: str, url: str, body: Any) -> Any:
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException as error:
            raise ServerUnavailableError(
                f"{method} {url} did not answer in time ({_reason(error)}). The server is up but slow "
                f"or overloaded: {self.slow_remedy}"
            ) from None
        if response.is_error:
            raise ServerResponseError(_status_message(method, url, response), status=response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ServerResponseError(f"{url} did not answer JSON: {response.content[:200]!r}") from None


def is_unreachable(error: BaseException) -> bool:
    """Whether a ``JSONClient`` request failed in a way a retry can cure."""
    if isinstance(error, ServerResponseError):
        return error.status in RETRY_STATUSES
    return isinstance(error, httpx.TransportError) and not isinstance(error, httpx.TimeoutException)


def _status_message(method: str, url: str, response: httpx.Response) -> str:
    """``METHOD URL answered HTTP code: detail``, the detail read from a JSON error body if any."""
    detail: Any = response.text
    try:
        parsed = response.json()
    except ValueError:  # not JSON (an HTML error page, say): the status's reason says more
        detail = response.reason_phrase
    else:
        if isinstance(parsed, dict):
            inner = parsed.get("error", parsed.get("detail", parsed))
            detail = inner.get("message", str(inner)) if isinstance(inner, dict) else str(inner)
    return f"{method} {url} answered HTTP {response.status_code}: {str(detail)[:500]}"
