"""The credentials an upstream takes, as configured: ``ClientConfig.auth``, one model per kind."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from yarl import URL

__all__ = [
    "AUTH_KINDS",
    "ApiKeyAuth",
    "AuthConfig",
    "BearerAuth",
    "OAuth2ClientCredentialsAuth",
    "header_value_problem",
    "is_header_name",
]

#: RFC 9110 ``token``: what a header name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value we can send unchanged: visible ASCII with inner spaces. No CR/LF or
#: other control characters (they would split or corrupt the request), and no edge
#: whitespace (a peer strips it, so the value it sees would differ from ours).
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
#: Form fields the grant itself sets; ``extra_params`` may not override them.
_RESERVED_PARAMS = frozenset({"grant_type", "client_id", "client_secret", "scope", "audience"})

Fraction = Annotated[float, Field(ge=0, lt=1)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


def is_header_name(value: str) -> bool:
    """True when ``value`` can be sent as a header name (an RFC 9110 token)."""
    return _TOKEN.fullmatch(value) is not None


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as a header value, or None; the reason never shows the value."""
    if _HEADER_VALUE.fullmatch(value):
        return None
    return (
        "must be usable as a header value: visible ASCII, no CR/LF or other control "
        "characters, no leading or trailing whitespace"
    )


def _secret_header_value(value: SecretStr) -> SecretStr:
    problem = header_value_problem(value.get_secret_value())
    if problem is not None:
        raise ValueError(problem)
    return value


class _Auth(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    #: The field that holds the kind's secret (the production profile vets it).
    sensitive_field: ClassVar[str]


class ApiKeyAuth(_Auth):
    """An API key in a header of its own: the seed's ``api_key``/``api_key_header``, as an ``auth`` kind."""

    sensitive_field = "key"

    type: Literal["api_key"]
    key: SecretStr
    header: str = Field(default="X-API-Key", min_length=1)

    _key = field_validator("key")(_secret_header_value)

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not is_header_name(value):
            raise ValueError("must be a header name (an RFC 9110 token: letters, digits, !#$%&'*+-.^_`|~)")
        return value


class BearerAuth(_Auth):
    """A static bearer token: ``Authorization: Bearer <token>`` on every call."""

    sensitive_field = "token"

    type: Literal["bearer"]
    token: SecretStr

    _token = field_validator("token")(_secret_header_value)


class OAuth2ClientCredentialsAuth(_Auth):
    """OAuth2 client credentials (RFC 6749 §4.4): tokens from ``token_url``, refreshed ahead of expiry.

    ``scope``, ``audience`` and ``extra_params`` go with every token request, the first
    and each refresh alike. The client authenticates to the token endpoint with HTTP
    Basic (``client_secret_basic``, the RFC's default) or in the form
    (``client_secret_post``). A token is refreshed in the background once
    ``1 - refresh_ahead_fraction`` of its lifetime has passed, less up to
    ``refresh_jitter_fraction`` of it at random (so replicas do not refresh together).
    The token endpoint has its own attempt timeout, retries and breaker.
    """

    sensitive_field = "client_secret"

    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str = Field(min_length=1, max_length=1024)
    client_secret: SecretStr
    scope: str | None = Field(default=None, min_length=1, max_length=4096)
    audience: str | None = Field(default=None, min_length=1, max_length=4096)
    extra_params: dict[str, str] = Field(default_factory=dict, max_length=64)
    client_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    refresh_ahead_fraction: Fraction = 0.2
    refresh_jitter_fraction: Fraction = 0.05
    #: The lifetime assumed when the token endpoint sends no ``expires_in``.
    default_expires_in_seconds: float = Field(default=300.0, gt=0, le=86_400)
    token_timeout_seconds: Seconds = 5.0
    token_max_retries: int = Field(default=2, ge=0, le=10)
    token_retry_base_delay_seconds: float = Field(default=0.2, ge=0, le=60)
    token_retry_max_delay_seconds: float = Field(default=5.0, ge=0, le=300)
    token_breaker_failure_threshold: int = Field(default=5, ge=1, le=1000)
    token_breaker_reset_timeout_seconds: Seconds = 30.0

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (TypeError, ValueError):
            raise ValueError("must be an absolute http:// or https:// URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL")
        if url.user or url.password:
            raise ValueError("must not carry credentials; use client_id and client_secret")
        if url.query_string or url.fragment:
            raise ValueError("must not carry a query or a fragment; use extra_params")
        return str(url)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text")
        return value

    _secret = field_validator("client_secret")(_secret_header_value)

    @field_validator("extra_params")
    @classmethod
    def _extra_params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in value if k.lower() in _RESERVED_PARAMS)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} set by the grant itself (use the field of that name), "
                "not extra_params"
            )
        if any(not k or not k.isprintable() for k in value):
            raise ValueError("names must be non-empty printable text")
        return value

    @model_validator(mode="after")
    def _refresh_before_expiry(self) -> OAuth2ClientCredentialsAuth:
        if self.refresh_ahead_fraction + self.refresh_jitter_fraction >= 1:
            raise ValueError("refresh_ahead_fraction + refresh_jitter_fraction must be below 1")
        if self.token_retry_base_delay_seconds > self.token_retry_max_delay_seconds:
            raise ValueError("token_retry_base_delay_seconds must not exceed token_retry_max_delay_seconds")
        return self


def _untagged(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Errors at the field, not under the union's tag: ``auth.token_url``, not ``auth.bearer.token_url``.

    Every location is then a field with a variable: ``APP_<UPSTREAM>__AUTH__TOKEN_URL``.
    """
    try:
        return handler(value)
    except ValidationError as exc:
        details: list[InitErrorDetails] = []
        for item in exc.errors(include_url=False):
            loc = item["loc"]
            if loc and loc[0] in AUTH_KINDS:
                loc = loc[1:]
            # The same type and message; only the location moves.
            kind = PydanticCustomError(item["type"], "{reason}", {"reason": item["msg"]})
            details.append(InitErrorDetails(type=kind, loc=loc, input=item["input"]))
        # hide_input: the input may be a secret (a token, a client secret).
        raise ValidationError.from_exception_data(exc.title, details, hide_input=True) from None


#: ``ClientConfig.auth``: one of the kinds, chosen by its ``type``.
AuthConfig = Annotated[
    ApiKeyAuth | BearerAuth | OAuth2ClientCredentialsAuth,
    Field(discriminator="type"),
    WrapValidator(_untagged),
]

#: The values of ``type``, one per kind.
AUTH_KINDS: tuple[str, ...] = ("api_key", "bearer", "oauth2_client_credentials")
