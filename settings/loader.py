"""load_settings: pick the profile from APP_ENV and turn a bad value into one clear line."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from settings.config import FLAT_ALIASES, UPSTREAMS, Settings, env_prefix

__all__ = ["PROFILES_DIR", "SettingsError", "load_settings"]

PROFILES_DIR = Path(__file__).parent / "profiles"
PROFILES = ("local", "test", "production")


class SettingsError(Exception):
    """Invalid configuration: the message names each bad field and its env variable."""


def _env_names(loc: tuple[str | int, ...]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return "settings"
    if parts[0] == "upstreams" and len(parts) >= 3:
        # upstreams.pricing.timeout_seconds: APP_UPSTREAMS__PRICING__TIMEOUT_SECONDS; the
        # gateway's own upstreams are named by their section's variables, and the seed's.
        name, rest = parts[1], parts[2:]
        names = [env_prefix(name) + "__".join(p.upper() for p in rest)]
        if len(rest) == 1 and name in UPSTREAMS:
            names += [
                f"{name.upper()}_{suffix}" for suffix, field in FLAT_ALIASES.items() if field == rest[0]
            ]
        return " or ".join(names)
    return "APP_" + "__".join(p.upper() for p in parts)


def describe(error: ValidationError) -> str:
    """One line naming every bad field, its env variable(s) and what is wrong (never the value)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        loc = tuple(item["loc"])
        field = ".".join(str(p) for p in loc) or "settings"
        msg = item["msg"].removeprefix("Value error, ")
        problems.append(f"{field} ({_env_names(loc)}): {msg}" if loc else msg)
    return "invalid settings: " + "; ".join(problems)


def load_settings(profile: str | None = None) -> Settings:
    """Settings for ``profile`` (default: ``APP_ENV``, else ``local``); env vars beat the file."""
    name = profile or os.environ.get("APP_ENV") or "local"
    if name not in PROFILES:
        raise SettingsError(
            f"invalid settings: env (APP_ENV): must be one of {', '.join(PROFILES)}, got {name!r}"
        )
    try:
        return Settings(_env_file=PROFILES_DIR / f"{name}.env", env=name)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
