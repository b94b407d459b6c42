"""Credentials on outbound calls: API key, static bearer token, OAuth2 client credentials (DESIGN §9)."""

from app.auth.config import (
    AUTH_KINDS,
    ApiKeyAuth,
    AuthConfig,
    BearerAuth,
    OAuth2ClientCredentialsAuth,
)
from app.auth.credentials import Credentials, credentials_from_config
from app.auth.metrics import TokenMetrics
from app.auth.oauth2 import OAuth2ClientCredentials
from app.auth.static import StaticCredentials, static_credentials
from app.auth.token import Token, parse_token
from app.auth.token_endpoint import TokenEndpoint

__all__ = [
    "AUTH_KINDS",
    "ApiKeyAuth",
    "AuthConfig",
    "BearerAuth",
    "Credentials",
    "OAuth2ClientCredentials",
    "OAuth2ClientCredentialsAuth",
    "StaticCredentials",
    "Token",
    "TokenEndpoint",
    "TokenMetrics",
    "credentials_from_config",
    "parse_token",
    "static_credentials",
]
