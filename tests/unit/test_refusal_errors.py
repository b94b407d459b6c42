"""ClientError.refusal: the lean path's error is the one the constructor builds, attribute for attribute."""

from __future__ import annotations

import pickle

import pytest

from app.errors import BulkheadFullError, CircuitBreakerOpenError, ClientError
from app.redaction import forget_secret, register_temporary_secret


@pytest.mark.parametrize(("cls", "retry_after"), [(CircuitBreakerOpenError, 12.5), (BulkheadFullError, None)])
def test_refusal_equals_the_constructor(cls: type[ClientError], retry_after: float | None) -> None:
    fast = cls.refusal("svc", "GET", "prices/{symbol}", retry_after)
    slow = cls(
        cls.reason,
        service_name="svc",
        method="GET",
        endpoint="prices/{symbol}",
        attempts=0,
        retry_after=retry_after,
    )
    assert type(fast) is cls
    # status and _message are read from the class on the lean error: compare what reads see.
    assert _attributes(fast) == _attributes(slow)
    assert set(fast.__dict__) <= set(slow.__dict__)
    assert (str(fast), repr(fast), fast.args, fast.context()) == (
        str(slow),
        repr(slow),
        slow.args,
        slow.context(),
    )
    assert (fast.status, fast.attempts, fast.retry_after, fast.outcome) == (None, 0, retry_after, cls.outcome)
    assert (fast.detail, fast.code, fast.location, fast.operation, fast.instance) == (None,) * 5
    back = pickle.loads(pickle.dumps(fast))  # noqa: S301 - our own bytes
    assert (type(back), _attributes(back), str(back)) == (cls, _attributes(fast), str(fast))


def _attributes(error: ClientError) -> dict[str, object]:
    """Every attribute an instance's reads see: its own and the ones the constructor always sets."""
    names = {"service_name", "method", "endpoint", "status", "attempts", "retry_after", "_message"}
    return {name: getattr(error, name) for name in names | set(error.__dict__)}


def test_a_reason_changed_after_the_class_is_the_refusals_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reason set later (say, translated) is what a refusal says, as the constructor's error does."""
    monkeypatch.setattr(CircuitBreakerOpenError, "reason", "Schaltkreis offen")
    fast = CircuitBreakerOpenError.refusal("svc", "GET", "x", None)
    slow = CircuitBreakerOpenError(
        CircuitBreakerOpenError.reason, service_name="svc", method="GET", endpoint="x", attempts=0
    )
    assert (str(fast), repr(fast), fast.args) == (str(slow), repr(slow), slow.args)
    assert "Schaltkreis offen" in str(fast)


def test_a_refusal_still_scrubs_on_the_way_out() -> None:
    """A secret that is the service's name (a misconfiguration) is masked in str, as for any error."""
    register_temporary_secret("sk-live-0123456789abcdef")
    try:
        error = CircuitBreakerOpenError.refusal("sk-live-0123456789abcdef", "GET", "x", None)
        assert "sk-live-0123456789abcdef" not in str(error)
        assert "sk-live-0123456789abcdef" not in str(error.context())
    finally:
        forget_secret("sk-live-0123456789abcdef")
