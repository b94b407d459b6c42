"""Typed, resilient service clients: the public API of the framework.

The factory path for code without DI (``get_analysis_engine_client()`` and friends) is
``app.factory``: it reads the composition root, which sits above this package. The test
mode (a fake clock, fast settings, client overrides) is ``app.clients.testing``. The
request and answer models of the service clients, and the field types to build models of
your own upstreams from, are in ``app.clients.contracts``.
"""

from app.clients.analysis_engine import (
    AnalysisEngineClient,
    Candle,
    IndicatorRequest,
    IndicatorResult,
    IndicatorSpec,
    IndicatorsRequest,
    IndicatorsResponse,
    PriceSeries,
    PricesQuery,
    RegimeQuery,
    RegimeResponse,
)
from app.clients.base import (
    BaseServiceClient,
    CallOptions,
)
from app.clients.config import (
    ClientConfig,
)
from app.clients.lean_transport import LeanTransport, default_transport
from app.clients.ml_workbench import (
    MLWorkbenchClient,
    ModelInfo,
    ModelRef,
    Prediction,
    PredictRequest,
)
from app.clients.operations import operation
from app.clients.reconfigure import reconfigure_problems
from app.clients.registry import (
    client_class_for,
    register_client_class,
    unregister_client_class,
    upstream_client,
)
from app.errors import (
    AuthenticationError,
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientAuthenticationError,
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ClientResponseError,
    ClientTimeoutError,
    ClientValidationError,
    DataValidationError,
    ErrorContext,
    InvalidRequestError,
    RateLimitedError,
    RequestEncodeError,
    ResourceNotFoundError,
    ResponseDecodeError,
    RetryExhaustedError,
    ServerError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
    TokenEndpointError,
)

__all__ = [
    "AnalysisEngineClient",
    "AuthenticationError",
    "BaseServiceClient",
    "BulkheadFullError",
    "CallOptions",
    "Candle",
    "CircuitBreakerOpenError",
    "ClientAuthenticationError",
    "ClientClosedError",
    "ClientConfig",
    "ClientConnectionError",
    "ClientError",
    "ClientResponseError",
    "ClientTimeoutError",
    "ClientValidationError",
    "DataValidationError",
    "ErrorContext",
    "IndicatorRequest",
    "IndicatorResult",
    "IndicatorSpec",
    "IndicatorsRequest",
    "IndicatorsResponse",
    "InvalidRequestError",
    "LeanTransport",
    "MLWorkbenchClient",
    "ModelInfo",
    "ModelRef",
    "PredictRequest",
    "Prediction",
    "PriceSeries",
    "PricesQuery",
    "RateLimitedError",
    "RegimeQuery",
    "RegimeResponse",
    "RequestEncodeError",
    "ResourceNotFoundError",
    "ResponseDecodeError",
    "RetryExhaustedError",
    "ServerError",
    "ServiceError",
    "ServiceTimeoutError",
    "ServiceUnavailableError",
    "TokenEndpointError",
    "client_class_for",
    "default_transport",
    "operation",
    "reconfigure_problems",
    "register_client_class",
    "unregister_client_class",
    "upstream_client",
]
