"""A user's own upstream, built as the README's "Add your own upstream" does: a client and a route."""

# No `from __future__ import annotations` here: @inject reads the Annotated markers
# from the signature at decoration time, and string annotations would hide them.

from typing import Annotated, Any

from dependency_injector.wiring import inject
from fastapi import APIRouter

from app.api.deps import UpstreamClient
from app.clients import BaseServiceClient, upstream_client

__all__ = ["PricingClient", "PricingDep", "router"]


@upstream_client("pricing")
class PricingClient(BaseServiceClient):
    """Client of the pricing service: one quote per symbol."""

    async def quote(self, symbol: str) -> dict[str, Any]:
        """The latest quote of ``symbol``."""
        data: dict[str, Any] = await self.get("quotes/{symbol}", path_params={"symbol": symbol})
        return data


PricingDep = Annotated[PricingClient, UpstreamClient("pricing")]

router = APIRouter(prefix="/api/v1/pricing", tags=["pricing"])


@router.get("/{symbol}")
@inject
async def quote(symbol: str, pricing: PricingDep) -> dict[str, Any]:
    """The quote of ``symbol``, from the pricing upstream, and which client class served it."""
    return {"client": type(pricing).__name__, **await pricing.quote(symbol)}
