"""ClientPolicies.from_config: the one place a client's policies are built from its config."""

from __future__ import annotations

import asyncio

import pytest

from app.clients import BaseServiceClient, ClientClosedError, ClientConfig, ServerError
from app.clients.policies import ClientPolicies
from tests.support.clock import FakeClock


async def _fail_with(error: BaseException) -> None:
    raise error


async def _through(breaker, error: BaseException) -> None:
    with pytest.raises(type(error)):
        await breaker.call_through(_fail_with, error)


async def test_our_own_shutdown_is_neutral_to_a_breaker_built_from_config() -> None:
    """A ClientClosedError between two 503s neither resets nor adds to the count; a fixed break stays exact."""
    clock = FakeClock()
    config = ClientConfig(base_url="http://127.0.0.1:9/", circuit_breaker_failure_threshold=3)
    breaker = ClientPolicies.from_config(config, clock).breaker
    for _ in range(2):
        await _through(breaker, ServerError(status=503))
    await _through(breaker, ClientClosedError())
    assert breaker.fail_counter == 2
    assert breaker.state_name == "closed"
    await _through(breaker, ServerError(status=503))
    assert breaker.state_name == "open"
    # The config's 0.1 jitter spreads growing break durations only: a fixed one is exact.
    assert breaker.seconds_until_half_open() == 60.0


def test_optional_policies_are_off_unless_configured() -> None:
    """Budget, rate limiter, hedging and the adaptive limit are None until the config asks for them."""
    off = ClientPolicies.from_config(ClientConfig(base_url="http://127.0.0.1:9/"))
    assert (off.budget, off.rate_limiter, off.hedging, off.adaptive) == (None, None, None, None)
    on = ClientPolicies.from_config(
        ClientConfig(
            base_url="http://127.0.0.1:9/",
            retry_budget_enabled=True,
            rate_limit_per_second=5,
            hedging_enabled=True,
            bulkhead_mode="adaptive",
        )
    )
    assert None not in (on.budget, on.rate_limiter, on.hedging, on.adaptive)


def test_a_client_uses_the_policies_it_is_given() -> None:
    """Clients given one ClientPolicies share its breaker, bulkhead and observer."""
    config = ClientConfig(base_url="http://127.0.0.1:9/")
    policies = ClientPolicies.from_config(config)
    first, second = BaseServiceClient(config, policies=policies), BaseServiceClient(config, policies=policies)
    assert first.breaker is second.breaker is policies.breaker
    assert first.bulkhead is second.bulkhead is policies.bulkhead
    assert first.observer is second.observer is policies.observer
    asyncio.run(first.close())
    asyncio.run(second.close())
