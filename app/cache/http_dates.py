"""HTTP-date parsing and formatting (RFC 9110 §5.6.7): IMF-fixdate, RFC 850 and asctime forms."""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["format_http_date", "parse_http_date"]

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_IMF = re.compile(r"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_RFC850 = re.compile(r"^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_ASCTIME = re.compile(r"^[A-Za-z]{3} ([A-Za-z]{3}) (\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$")


def _epoch(year: int, month_name: str, day: int, clock: tuple[str, str, str]) -> float | None:
    hour, minute, second = (int(part) for part in clock)
    month = _MONTHS.get(month_name.capitalize())
    if month is None or not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0)))


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch for an HTTP-date, or None when ``value`` is absent or invalid."""
    if value is None:
        return None
    text = " ".join(value.split())
    if m := _IMF.match(text):
        day, month, year, hh, mm, ss = m.groups()
        return _epoch(int(year), month, int(day), (hh, mm, ss))
    if m := _RFC850.match(text):
        day, month, yy, hh, mm, ss = m.groups()
        # RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past century.
        this_year = time.gmtime().tm_year
        year = 2000 + int(yy) if 2000 + int(yy) <= this_year + 50 else 1900 + int(yy)
        return _epoch(year, month, int(day), (hh, mm, ss))
    if m := _ASCTIME.match(text):
        month, day, hh, mm, ss, year = m.groups()
        return _epoch(int(year), month, int(day), (hh, mm, ss))
    return None


def format_http_date(seconds: float) -> str:
    """``seconds`` since the epoch as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    t = time.gmtime(seconds)
    day = calendar.day_abbr[t.tm_wday]
    month = calendar.month_abbr[t.tm_mon]
    return f"{day}, {t.tm_mday:02d} {month} {t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
