"""Age calculation (RFC 9111 §4.2.3): the corrected initial age, then resident time on the monotonic clock."""

from __future__ import annotations

from app.cache.directives import MAX_DELTA_SECONDS
from app.cache.headers import Headers, first_header, first_member
from app.cache.http_dates import parse_http_date

__all__ = ["age_value", "corrected_initial_age", "current_age"]


def age_value(headers: Headers) -> float:
    """The Age field's first member, or 0 when absent or invalid (§5.1: ignore an invalid Age)."""
    raw = first_member(headers, "age")
    if raw is None or not raw.isascii() or not raw.isdigit():
        return 0.0
    return float(min(int(raw), MAX_DELTA_SECONDS))


def corrected_initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """§4.2.3's ``corrected_initial_age`` from the response headers and the wall times of the exchange.

    ``request_time`` is when the request was sent and ``response_time`` when the response was
    received, both wall-clock seconds. Without a Date, the receipt time stands for it.
    """
    date_value = parse_http_date(first_header(headers, "date"))
    if date_value is None:
        date_value = response_time
    apparent_age = max(0.0, response_time - date_value)
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value(headers) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(initial_age: float, stored_at: float, now: float) -> float:
    """The age now: the initial age plus the resident time on the monotonic clock (never negative)."""
    return initial_age + max(0.0, now - stored_at)
