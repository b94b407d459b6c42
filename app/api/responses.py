"""A JSON response serialised by orjson (FastAPI's ORJSONResponse is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

__all__ = ["JsonBytesResponse"]


class JsonBytesResponse(Response):
    """``application/json`` rendered with orjson: fast, and NaN-safe (NaN becomes null)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return orjson.dumps(content)
