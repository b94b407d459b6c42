"""TokenEndpoint: one client-credentials token request, under its own timeout, retries and breaker."""

from __future__ import annotations

import base64
import functools
import math
import re
import urllib.parse

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from app.auth.config import OAuth2ClientCredentialsAuth
from app.auth.metrics import TokenMetrics
from app.auth.token import Token, parse_token
from app.errors import (
    CircuitBreakerOpenError,
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    ErrorContext,
    ResponseDecodeError,
    TokenEndpointError,
    error_for_status,
)
from app.redaction import is_secret_key, register_secret
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.bulkhead import Bulkhead
from app.resilience.clock import MONOTONIC, Clock
from app.resilience.deadline import Deadline
from app.resilience.pipeline import CallRecord, Pipeline
from app.resilience.retry import RetryPolicy, parse_retry_after

__all__ = ["TokenEndpoint"]

#: A token answer is a few hundred bytes; anything past this is not one.
MAX_ANSWER_BYTES = 64 * 1024
#: Statuses worth another try: the endpoint is busy or failing, not refusing us.
_RETRY_ON = frozenset({429, 500, 502, 503, 504})
#: RFC 6749 §5.2 ``error`` codes are short ASCII words; anything else is not kept.
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _is_failure(error: BaseException) -> bool:
    # Unlike an upstream's, this breaker counts refusals too: a token endpoint that refuses
    # our credentials will refuse them again, and asking at every call would only hammer it.
    return not isinstance(error, ClientClosedError)


def _is_neutral(error: BaseException) -> bool:
    return isinstance(error, ClientClosedError)


def _form_encoded(value: str) -> str:
    """RFC 6749 §2.3.1: client id and secret are form-encoded before they go into HTTP Basic."""
    return urllib.parse.quote_plus(value, safe="")


class TokenEndpoint:
    """Gets tokens from one OAuth2 token endpoint with the client credentials grant.

    Every request sends the same form: ``grant_type``, ``scope``, ``audience`` and
    ``extra_params`` (the first request and every refresh alike), plus the client's
    credentials in the form (``client_secret_post``) or as HTTP Basic
    (``client_secret_basic``). A fetch runs through a pipeline of its own: each attempt
    within ``token_timeout_seconds``, ``token_max_retries`` retries with jittered
    backoff (connection failures, timeouts, 429 and 5xx; a ``Retry-After`` honoured),
    and a breaker of its own that opens after ``token_breaker_failure_threshold`` failed
    fetches in a row. Each fetch opens a small aiohttp session and closes it: fetches
    are minutes apart (a kept-alive connection would not last that long), and a session
    then never outlives the event loop it ran on.
    """

    __slots__ = (
        "_default_lifetime", "_form", "_headers", "_pipeline", "breaker", "clock", "metrics", "service_name",
        "url",
    )  # fmt: skip

    def __init__(
        self,
        config: OAuth2ClientCredentialsAuth,
        *,
        service_name: str,
        clock: Clock = MONOTONIC,
        metrics: TokenMetrics | None = None,
    ) -> None:
        self.url = config.token_url  # validated: no credentials, no query
        self.service_name = service_name
        self.clock = clock
        self.metrics = metrics
        self._default_lifetime = config.default_expires_in_seconds
        self._form, self._headers = _request(config)
        self.breaker = CircuitBreakerPolicy(
            config.token_breaker_failure_threshold,
            config.token_breaker_reset_timeout_seconds,
            is_failure=_is_failure,
            is_neutral=_is_neutral,
            clock=clock,
            name=f"{service_name} token endpoint",
        )
        retry = RetryPolicy(
            config.token_max_retries,
            config.token_retry_base_delay_seconds,
            config.token_retry_max_delay_seconds,
            jitter=True,
            retry_on_status=_RETRY_ON,
        )
        # Fetches are single-flight above this: one at a time, the rest (if any) wait.
        self._pipeline = Pipeline(
            bulkhead=Bulkhead(1, 1000),
            breaker=self.breaker,
            retry=retry,
            attempt_timeout=config.token_timeout_seconds,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"TokenEndpoint(url={self.url!r}, breaker={self.breaker.state_name!r})"

    async def fetch(self) -> Token:
        """A new token, or ``TokenEndpointError`` naming this endpoint (counted by outcome either way)."""
        record = CallRecord(self.url, "POST", "", "")
        try:
            async with _session(self.service_name) as session:
                token = await self._pipeline.execute(
                    functools.partial(self._attempt, session),
                    record,
                    Deadline.after(self.clock, None),
                    idempotent=True,
                )
        except ClientError as exc:
            if self.metrics is not None:
                self.metrics.fetched(exc.outcome)
            raise self._failed(exc) from exc
        if self.metrics is not None:
            self.metrics.fetched("success")
        return token

    async def _attempt(self, session: aiohttp.ClientSession, timeout: float) -> Token:
        """One token request within ``timeout``: the token, or the typed error of DESIGN §4 for the answer."""
        ctx: ErrorContext = {"service_name": self.url, "method": "POST", "endpoint": ""}
        sent_at = self.clock.now()
        try:
            async with session.post(
                self.url,
                data=self._form,
                headers=self._headers,
                allow_redirects=False,  # a redirect would carry the client's credentials elsewhere
                timeout=aiohttp.ClientTimeout(total=timeout, ceil_threshold=math.inf),
            ) as resp:
                status, headers = resp.status, resp.headers
                body = await _read(resp, ctx)
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise ClientTimeoutError(f"no answer within {timeout:.3f}s", **ctx) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ClientConnectionError("connect failed", request_sent=False, **ctx) from exc
        except aiohttp.ClientError as exc:
            raise ClientConnectionError(f"connection broke: {type(exc).__name__}", **ctx) from exc
        if status != 200:
            raise _refusal(status, headers, body, ctx, self._pipeline.retry.max_delay)
        try:
            return parse_token(body, sent_at, self._default_lifetime)
        except ValueError as exc:
            raise ResponseDecodeError(f"no usable token in the answer: {exc}", status=status, **ctx) from None

    def _failed(self, exc: ClientError) -> TokenEndpointError:
        """The error every caller waiting for this fetch gets: the endpoint, and how it failed."""
        status = exc.status
        if isinstance(exc, CircuitBreakerOpenError):
            how = "is failing; its circuit breaker is open"
        elif status is not None and 400 <= status < 500 and status != 429:
            how = f"refused the token request: HTTP {status}" + (f" {exc.code}" if exc.code else "")
        elif status is not None and status != 200:
            how = f"failed: HTTP {status}"
        else:
            how = f"failed: {exc.args[0] if exc.args else exc.reason}"
        if exc.attempts > 1:
            how += f" after {exc.attempts} attempts"
        return TokenEndpointError(
            f"token endpoint {self.url} {how}",
            token_endpoint=self.url,
            token_status=status,
            retry_after=exc.retry_after,
            service_name=self.service_name,
            attempts=0,
        )


def _request(config: OAuth2ClientCredentialsAuth) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of every token request; the client's secrets registered as secrets."""
    secret = config.client_secret.get_secret_value()
    register_secret(secret)
    form = {"grant_type": "client_credentials"}
    if config.scope is not None:
        form["scope"] = config.scope
    if config.audience is not None:
        form["audience"] = config.audience
    for name, value in config.extra_params.items():
        if is_secret_key(name):  # a client assertion, a password: masked like the secret
            register_secret(value)
        form[name] = value
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    if config.client_auth_method == "client_secret_basic":
        pair = f"{_form_encoded(config.client_id)}:{_form_encoded(secret)}"
        basic = base64.b64encode(pair.encode()).decode("ascii")
        register_secret(basic)  # the secret in base64 is not a form scrub() can find
        headers["Authorization"] = f"Basic {basic}"
    else:
        form["client_id"] = config.client_id
        form["client_secret"] = secret
    return form, headers


def _session(service_name: str) -> aiohttp.ClientSession:
    """A session for one fetch; open it inside the event loop that runs the fetch."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=2, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None),  # each attempt has its own
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # we asked for identity; a compressed answer is not decoded blind
        headers={"User-Agent": f"resilient-clients/0.1 ({service_name})"},
    )
    # aiohttp quietly resends an idempotent request once on a dropped connection; the
    # retries here are the pipeline's, counted and bounded (as in app/clients/session.py).
    session._retry_connection = False
    return session


async def _read(resp: aiohttp.ClientResponse, ctx: ErrorContext) -> bytes:
    """The answer's body, or ``ResponseDecodeError`` once it passes ``MAX_ANSWER_BYTES``."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            resp.close()
            raise ResponseDecodeError(f"answer over {MAX_ANSWER_BYTES} bytes", status=resp.status, **ctx)
    return bytes(body)


def _refusal(
    status: int, headers: CIMultiDictProxy[str], body: bytes, ctx: ErrorContext, max_delay: float
) -> ClientError:
    """The typed error for a non-200 answer, with the RFC 6749 §5.2 ``error`` as its code."""
    code, detail = _oauth_error(body)
    retry_after = (
        parse_retry_after(headers.get("Retry-After"), cap=max_delay) if status in (429, 503) else None
    )
    return error_for_status(status)(
        f"HTTP {status}" + (f" {code}" if code else ""),
        status=status,
        retry_after=retry_after,
        code=code,
        detail=detail,
        **ctx,
    )


def _oauth_error(body: bytes) -> tuple[str | None, str | None]:
    """``error`` (when it is a plain code) and ``error_description`` of an error answer, else None."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code, description = data.get("error"), data.get("error_description")
    return (
        code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None,
        description[:500] if isinstance(description, str) else None,
    )
