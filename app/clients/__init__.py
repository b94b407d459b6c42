"""Typed, resilient service clients: the public API of the framework."""

from app.clients.analysis_engine import AnalysisEngineClient
from app.clients.base import BaseServiceClient, operation
from app.clients.config import ClientConfig
from app.clients.exceptions import (
    AuthenticationError,
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientAuthenticationError,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    ClientTimeoutError,
    ClientValidationError,
    DataValidationError,
    RateLimitedError,
    ResourceNotFoundError,
    ResponseDecodeError,
    RetryExhaustedError,
    ServerError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from app.clients.factory import (
    get_analysis_engine_client,
    get_client,
    get_ml_workbench_client,
    register_client_config,
)
from app.clients.ml_workbench import MLWorkbenchClient

__all__ = [
    "AnalysisEngineClient",
    "AuthenticationError",
    "BaseServiceClient",
    "BulkheadFullError",
    "CircuitBreakerOpenError",
    "ClientAuthenticationError",
    "ClientConfig",
    "ClientConnectionError",
    "ClientError",
    "ClientResponseError",
    "ClientTimeoutError",
    "ClientValidationError",
    "DataValidationError",
    "MLWorkbenchClient",
    "RateLimitedError",
    "ResourceNotFoundError",
    "ResponseDecodeError",
    "RetryExhaustedError",
    "ServerError",
    "ServiceError",
    "ServiceTimeoutError",
    "ServiceUnavailableError",
    "get_analysis_engine_client",
    "get_client",
    "get_ml_workbench_client",
    "operation",
    "register_client_config",
]
