"""The keys of a config file that pydantic-settings would silently ignore: typos, seed aliases, bare names."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, get_origin

from pydantic import BaseModel

from settings.config import FLAT_ALIASES, UPSTREAMS, Settings

__all__ = ["file_key_problems"]


def _nested(annotation: Any) -> bool:
    """True for a field set by ``APP_<FIELD>__<PART>`` variables: a mapping or a model."""
    if get_origin(annotation) is dict:
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


#: ``APP_<FIELD>`` of every setting, and of the gateway's own upstreams' sections.
_FIELDS = {f"APP_{name.upper()}" for name in [*Settings.model_fields, *UPSTREAMS]}
#: The ones with parts: ``APP_UPSTREAMS__PRICING__BASE_URL``, ``APP_SHARED_STATE__KEY_PREFIX``.
_NESTED = tuple(
    f"APP_{name.upper()}__"
    for name, field in [*Settings.model_fields.items(), *((n, None) for n in UPSTREAMS)]
    if field is None or _nested(field.annotation)
)
#: The seed's flat names, each to its section's variable:
#: ``ANALYSIS_ENGINE_TIMEOUT`` -> ``APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS``.
_ALIASES = {
    f"{section.upper()}_{suffix}": f"APP_{section.upper()}__{field.upper()}"
    for section in UPSTREAMS
    for suffix, field in FLAT_ALIASES.items()
}


def file_key_problems(values: Mapping[str, str | None]) -> list[str]:
    """One line per key of the file that would not set what it says (by name, never the value).

    Other keys (neither ``APP_`` nor a seed alias) are left alone: the file may be shared
    with other programs. Nested parts (``APP_UPSTREAMS__X__TIMOUT``) need no check here:
    their models forbid unknown fields.
    """
    problems = []
    for key, value in values.items():
        name = key.upper()
        if name in _ALIASES:
            problems.append(
                f"{key}: the seed's names are read from the environment only; "
                f"in a file write {_ALIASES[name]}"
            )
            continue
        if not name.startswith("APP_"):
            continue
        if name not in _FIELDS and not name.startswith(_NESTED):
            close = difflib.get_close_matches(name, sorted(_FIELDS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{key}: not a setting{hint}")
        elif value is None:
            problems.append(f"{key}: no '=' on its line, so no value")
    return problems
