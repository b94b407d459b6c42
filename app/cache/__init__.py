"""The HTTP response cache's core (RFC 9111 subset, DESIGN §9): parsing, freshness, storing, stores."""

from app.cache.age import age_value, corrected_initial_age, current_age
from app.cache.clocks import SYSTEM_WALL_CLOCK, SystemWallClock, WallClock
from app.cache.directives import MAX_DELTA_SECONDS, CacheControl, parse_cache_control
from app.cache.entry import HOP_BY_HOP, CacheEntry, make_entry, storable_header_fields
from app.cache.freshness import freshness_lifetime, has_explicit_freshness
from app.cache.headers import (
    HeaderInput,
    Headers,
    first_header,
    first_member,
    header_values,
    normalize_headers,
    split_list,
)
from app.cache.http_dates import format_http_date, parse_http_date
from app.cache.key import CacheKey, cache_key, normalize_url
from app.cache.memory import MemoryStore, StoreStats
from app.cache.policy import DEFAULT_POLICY, HEURISTIC_STATUSES, CachePolicy
from app.cache.redis_store import RedisStore
from app.cache.revalidation import (
    NOT_MERGED,
    conditional_headers,
    freshen,
    merge_not_modified,
    validators_match,
)
from app.cache.single_flight import SingleFlight
from app.cache.staleness import Action, Verdict, assess
from app.cache.storability import is_storable, why_not_storable
from app.cache.store import CacheStore
from app.cache.vary import VaryValues, select_vary, vary_fields, vary_matches

__all__ = [
    "Action",
    "CacheControl",
    "CacheEntry",
    "CacheKey",
    "CachePolicy",
    "CacheStore",
    "DEFAULT_POLICY",
    "HEURISTIC_STATUSES",
    "HOP_BY_HOP",
    "HeaderInput",
    "Headers",
    "MAX_DELTA_SECONDS",
    "MemoryStore",
    "NOT_MERGED",
    "RedisStore",
    "SYSTEM_WALL_CLOCK",
    "SingleFlight",
    "StoreStats",
    "SystemWallClock",
    "VaryValues",
    "Verdict",
    "WallClock",
    "age_value",
    "assess",
    "cache_key",
    "conditional_headers",
    "corrected_initial_age",
    "current_age",
    "first_header",
    "first_member",
    "format_http_date",
    "freshen",
    "freshness_lifetime",
    "has_explicit_freshness",
    "header_values",
    "is_storable",
    "make_entry",
    "merge_not_modified",
    "normalize_headers",
    "normalize_url",
    "parse_cache_control",
    "parse_http_date",
    "select_vary",
    "split_list",
    "storable_header_fields",
    "validators_match",
    "vary_fields",
    "vary_matches",
    "why_not_storable",
]
