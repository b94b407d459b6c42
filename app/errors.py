"""The typed error tree every client raises (DESIGN §4)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self, TypedDict, get_args

from app.redaction import scrub, scrub_cut, scrub_deep

__all__ = [
    "AuthenticationError",
    "BulkheadFullError",
    "CircuitBreakerOpenError",
    "ClientAuthenticationError",
    "ClientClosedError",
    "ClientConnectionError",
    "ClientError",
    "ClientResponseError",
    "ClientTimeoutError",
    "ClientValidationError",
    "DataValidationError",
    "ErrorContext",
    "FAILURE_OUTCOMES",
    "InvalidRequestError",
    "OUTCOMES",
    "Outcome",
    "REJECTIONS",
    "RateLimitedError",
    "Rejection",
    "RequestEncodeError",
    "ResourceNotFoundError",
    "ResponseDecodeError",
    "RetryExhaustedError",
    "ServerError",
    "ServiceError",
    "ServiceTimeoutError",
    "ServiceUnavailableError",
    "TokenEndpointError",
]


#: How a logical call ended: the one vocabulary of logs, metrics, spans and the status API.
Outcome = Literal[
    "success",
    "fallback",
    "client_error",
    "server_error",
    "timeout",
    "connection_error",
    "rate_limited",
    "decode_error",
    "short_circuited",
    "rejected",
    "invalid_request",
    "client_closed",
    "error",
]
#: Every outcome, in the order the status API lists them.
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
#: Outcomes that count as the dependency's failures: all but answers, fallbacks, the
#: caller's own bad requests (sent, or refused before sending) and our own shutdown.
FAILURE_OUTCOMES: frozenset[Outcome] = frozenset(OUTCOMES) - {
    "success",
    "fallback",
    "client_error",
    "invalid_request",
    "client_closed",
}

#: Why a policy refused a call, or a retry, before anything was sent.
Rejection = Literal["breaker_open", "bulkhead_full", "rate_limited", "budget_exhausted"]
REJECTIONS: tuple[Rejection, ...] = get_args(Rejection)


class ErrorContext(TypedDict):
    """Where an error happened: passed as ``**context`` to every error's constructor."""

    service_name: str
    method: str
    endpoint: str


class ServiceError(Exception):
    """Root of every error a call to another service can end in."""


class ServiceUnavailableError(ServiceError):
    """The dependency cannot serve the call now (down, sick, shedding load)."""


class ServiceTimeoutError(ServiceError):
    """The call ran out of time."""


class DataValidationError(ServiceError):
    """The request or the response did not have the expected shape."""


class AuthenticationError(ServiceError):
    """The dependency refused our credentials."""


# BaseException's own ``args`` slot, which ClientError.args reads through.
_ARGS: Any = BaseException.__dict__["args"]


class ClientError(ServiceError):
    """Base of every error raised by a service client.

    The message names the service, the method and the endpoint template; it never holds
    a secret, the filled-in URL or a body. Text that comes from elsewhere (the message,
    the upstream's ``detail`` and ``code``, a ``Location``) is scrubbed of registered
    secrets when it is set, so an upstream that echoes our API key back cannot show it
    to anyone who reads the error; ``str``, ``repr`` and ``context()`` scrub again on
    the way out, for a secret registered after the error was built.
    """

    #: Default reason text for the class, used when the raise site gives none.
    reason: ClassVar[str] = "request failed"
    #: The outcome label logs and metrics count this error under.
    outcome: ClassVar[Outcome] = "error"
    #: The service method the error passed through (set by ``@operation``).
    operation: str | None = None
    #: True when a retry was refused because the client's retry budget was spent.
    budget_exhausted: bool = False
    #: The instance (``host:port``) that answered or failed, when the upstream has several.
    instance: str | None = None
    #: True when only this instance failed while others of the upstream still answer: the
    #: balancer deals with it (retry elsewhere, ejection) and the breaker does not count it.
    instance_local: bool = False
    # Backing fields of the scrubbed properties below; the class defaults keep an error
    # built on a refused call (every call while a dependency is down) cheap.
    _detail: str | None = None
    _code: str | None = None
    _location: str | None = None
    # Read by an error built without ``__init__`` (``refusal``); ``__init__`` sets its own.
    status: int | None = None
    _message: str = reason

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A refusal's message is its class's reason (``refusal`` does not store one).
        cls._message = cls.reason

    def __init__(
        self,
        message: str | None = None,
        *,
        service_name: str = "",
        method: str = "",
        endpoint: str = "",
        status: int | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
        detail: str | None = None,
        code: str | None = None,
        location: str | None = None,
        operation: str | None = None,
    ) -> None:
        self.service_name = service_name
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts
        self.retry_after = retry_after
        if detail is not None:
            self.detail = detail
        if code is not None:
            self.code = code
        if location is not None:
            self.location = location
        if operation is not None:
            self.operation = operation
        # The class's own reason holds no secret: the lean refusal path skips the scrub.
        # Others may end in upstream text cut to a length (``HTTP 400 <code>``).
        self._message = self.reason if message is None or message is self.reason else scrub_cut(message)
        super().__init__(self._message)

    @classmethod
    def refusal(cls, service_name: str, method: str, endpoint: str, retry_after: float | None) -> Self:
        """The error of a call refused before anything was sent, with the class's own reason.

        What ``cls(cls.reason, service_name=..., method=..., endpoint=..., attempts=0,
        retry_after=...)`` builds, attribute for attribute, in half the time: a refusal is
        built for every call while a dependency is down (issue 16's P5).
        """
        reason = cls.reason
        error = cls.__new__(cls, reason)  # BaseException.__new__ sets args
        # Five stores, no keyword dict: ``status`` and ``_message`` are the class's
        # (None, the reason), and five keys fit a new instance dict without a resize.
        if cls._message is not reason:  # the reason was changed after the class was made
            error._message = reason
        error.service_name = service_name
        error.method = method
        error.endpoint = endpoint
        error.attempts = 0
        error.retry_after = retry_after
        return error

    @property
    def detail(self) -> str | None:
        """The upstream's error ``detail`` (when it sent ``{"detail", "code"}``), scrubbed."""
        return None if self._detail is None else scrub(self._detail)

    @detail.setter
    def detail(self, value: str | None) -> None:
        # The upstream may have cut its detail (or we did, to a size) through a secret.
        self._detail = None if value is None else scrub_cut(value)

    @property
    def code(self) -> str | None:
        """The upstream's error ``code``, scrubbed."""
        return None if self._code is None else scrub(self._code)

    @code.setter
    def code(self, value: str | None) -> None:
        self._code = None if value is None else scrub_cut(value)

    @property
    def location(self) -> str | None:
        """A 3xx's ``Location``, scrubbed (a redirect may carry a key in its query)."""
        return None if self._location is None else scrub(self._location)

    @location.setter
    def location(self, value: str | None) -> None:
        self._location = None if value is None else scrub(value)

    def __str__(self) -> str:
        where = " ".join(p for p in (self.method, self.endpoint) if p)
        head = f"{self.service_name}: " if self.service_name else ""
        if self.operation:
            head += f"{self.operation}: "
        if where:
            head += f"{where}: "
        tail = f" (HTTP {self.status})" if self.status is not None else ""
        if self.attempts > 1:
            tail += f" after {self.attempts} attempts"
        if self.budget_exhausted:
            tail += "; retry budget exhausted"
        return scrub(f"{head}{self._message}{tail}")

    @property
    def args(self) -> tuple[Any, ...]:
        """The exception's arguments (the message), scrubbed like every other exit."""
        return tuple(scrub(a) if isinstance(a, str) else a for a in _ARGS.__get__(self))

    @args.setter
    def args(self, value: tuple[Any, ...]) -> None:
        _ARGS.__set__(self, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({scrub(self._message)!r})"

    def context(self) -> dict[str, Any]:
        """The error's attributes, for logs and API responses (scrubbed)."""
        out: dict[str, Any] = scrub_deep(
            {
                "error": type(self).__name__,
                "service": self.service_name,
                "method": self.method,
                "endpoint": self.endpoint,
                "status": self.status,
                "attempts": self.attempts,
                "retry_after": self.retry_after,
            }
        )
        if self.instance is not None:
            out["instance"] = self.instance
        return out


class ClientConnectionError(ClientError, ServiceUnavailableError):
    """Connect refused, DNS failure, or the connection broke before a full response."""

    reason = "connection failed"
    outcome: ClassVar[Outcome] = "connection_error"

    def __init__(self, message: str | None = None, *, request_sent: bool = True, **kw: Any) -> None:
        # A connection that failed before the request left is safe to retry for any method.
        self.request_sent = request_sent
        super().__init__(message, **kw)


class ClientClosedError(ClientConnectionError):
    """The client was closed while the call was in flight or waiting.

    The caller's own shutdown, not the upstream's fault: never retried, and never
    counted by the breaker.
    """

    reason = "client closed"
    outcome = "client_closed"


class ClientTimeoutError(ClientError, ServiceTimeoutError):
    """The attempt timeout or the call's deadline ran out."""

    reason = "timed out"
    outcome = "timeout"


class ClientValidationError(ClientError, DataValidationError):
    """The upstream rejected the request as invalid (HTTP 400 or 422)."""

    reason = "request rejected as invalid"
    outcome = "client_error"


class ClientAuthenticationError(ClientError, AuthenticationError):
    """The upstream rejected our credentials (HTTP 401 or 403)."""

    reason = "credentials rejected"
    outcome = "client_error"


class TokenEndpointError(ClientError, AuthenticationError):
    """No token for the call: the token endpoint failed or refused our client credentials.

    Nothing was sent to the upstream, so the upstream's breaker never counts it, and
    ``status`` is None: the token endpoint's own status is ``token_status``. The message
    names the token endpoint (its URL without credentials), never a token or a secret.
    """

    reason = "token endpoint failed"
    #: Not the upstream's failure (its rolling stats must not count it), and not ours to retry.
    outcome = "client_error"
    #: The token endpoint's URL, without credentials or query.
    token_endpoint: str = ""
    #: The status the token endpoint answered with, or None (no answer, or breaker open).
    token_status: int | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        token_endpoint: str = "",
        token_status: int | None = None,
        **kw: Any,
    ) -> None:
        self.token_endpoint = token_endpoint
        self.token_status = token_status
        super().__init__(message, **kw)

    def for_call(self, context: ErrorContext, attempts: int = 0) -> TokenEndpointError:
        """A copy naming one call: a fetch's error reaches every caller that waited for it, each its own."""
        return type(self)(
            self._message,
            token_endpoint=self.token_endpoint,
            token_status=self.token_status,
            retry_after=self.retry_after,
            attempts=attempts,
            **context,
        )

    def context(self) -> dict[str, Any]:
        """As :meth:`ClientError.context`, and the token endpoint with its status."""
        out = super().context()
        out["token_endpoint"] = scrub(self.token_endpoint)
        out["token_status"] = self.token_status
        return out


class ResourceNotFoundError(ClientError, DataValidationError):
    """The upstream has no such resource (HTTP 404)."""

    reason = "not found"
    outcome = "client_error"


class RateLimitedError(ClientError, ServiceUnavailableError):
    """The upstream is rate limiting us (HTTP 429); ``retry_after`` comes from the header."""

    reason = "rate limited"
    outcome = "rate_limited"


class ServerError(ClientError, ServiceUnavailableError):
    """The upstream failed (HTTP 5xx)."""

    reason = "upstream server error"
    outcome = "server_error"


class ClientResponseError(ClientError, DataValidationError):
    """Any other 4xx, or a 3xx when redirects are not followed (``location`` kept)."""

    reason = "unexpected response"
    outcome = "client_error"


class ResponseDecodeError(ClientError, DataValidationError):
    """The body is not the JSON it claims to be, or is over the size limit."""

    reason = "response could not be decoded"
    outcome = "decode_error"


class RequestEncodeError(ClientError, DataValidationError):
    """The request cannot be sent as given; nothing was sent.

    A body the encoder cannot write (an int past 64 bits, an object it does not know),
    a header value with CR/LF, or an invalid header name. Not retried, and not counted
    by the breaker: the fault is the caller's, not the upstream's.
    """

    reason = "request cannot be encoded"
    outcome = "invalid_request"


class InvalidRequestError(RequestEncodeError):
    """The request does not validate against its model (the field is named); nothing was sent.

    Raised by the typed service clients before the pipeline: not retried, not seen by the
    breaker or outlier detection, never answered by a fallback.
    """

    reason = "request does not validate"


class CircuitBreakerOpenError(ClientError, ServiceUnavailableError):
    """The breaker is open; nothing was sent. ``retry_after`` is the time to half-open."""

    reason = "circuit breaker open"
    outcome = "short_circuited"


class BulkheadFullError(ClientError, ServiceUnavailableError):
    """Too many calls in flight and waiting; nothing was sent."""

    reason = "bulkhead full"
    outcome = "rejected"


class RetryExhaustedError(ClientError):
    """Retries gave up after more than one attempt.

    Raised instances are also instances of the last attempt's error class (see
    :func:`retry_exhausted`), so ``except ClientTimeoutError`` still catches a call
    whose every attempt timed out, and the platform category is the last error's.
    """

    reason = "retries exhausted"
    last_error: ClientError


_STATUS_ERRORS: dict[int, type[ClientError]] = {
    400: ClientValidationError,
    422: ClientValidationError,
    401: ClientAuthenticationError,
    403: ClientAuthenticationError,
    404: ResourceNotFoundError,
    429: RateLimitedError,
}


def error_for_status(status: int) -> type[ClientError]:
    """The error class for a non-2xx HTTP status (the DESIGN §4 table)."""
    if 500 <= status < 600:
        return ServerError
    # Anything else, a made-up 6xx or 9xx included, is an answer we do not understand.
    return _STATUS_ERRORS.get(status, ClientResponseError)


_EXHAUSTED: dict[type[ClientError], type[RetryExhaustedError]] = {}


def retry_exhausted(last: ClientError) -> RetryExhaustedError:
    """Wrap the last attempt's error in a ``RetryExhaustedError`` of the same class."""
    cls = type(last)
    combined = _EXHAUSTED.get(cls)
    if combined is None:
        # One combined class per error class, built once: isinstance works both ways.
        combined = type(f"RetryExhausted{cls.__name__}", (RetryExhaustedError, cls), {})
        _EXHAUSTED[cls] = combined
    err = combined.__new__(combined)
    err.__dict__.update(last.__dict__)
    err.args = last.args
    err.last_error = last
    err._message = f"retries exhausted: {last._message}"
    return err
