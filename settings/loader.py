"""load_settings: pick the profile and its file, read it once, and turn a bad value into one clear line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import ValidationError

from app.discovery.watch import FileRead, read_file
from settings.config import FLAT_ALIASES, UPSTREAMS, Settings, env_prefix
from settings.envfile import malformed_lines, parse_env_file, pinned_env_file
from settings.keys import file_key_problems

__all__ = [
    "CONFIG_FILE_VAR",
    "MAX_CONFIG_BYTES",
    "PROFILES",
    "PROFILES_DIR",
    "SettingsError",
    "build_settings",
    "config_path",
    "describe",
    "env_names",
    "environment_digest",
    "load_settings",
    "profile_name",
]

PROFILES_DIR = Path(__file__).parent / "profiles"
PROFILES = ("local", "test", "production")
#: Names the dotenv file read instead of the profile's own (``settings/profiles/<profile>.env``).
CONFIG_FILE_VAR = "APP_CONFIG_FILE"
#: A config file larger than this is refused: it is a list of settings, not a data set.
MAX_CONFIG_BYTES = 1 << 20
#: Variables that feed the settings: a change to one is a change of the settings' input.
_ENV_PREFIXES = ("APP_", *(f"{name.upper()}_" for name in UPSTREAMS))


class SettingsError(Exception):
    """Invalid configuration: the message names each bad field and its env variable."""


def env_names(loc: tuple[str | int, ...]) -> str:
    """The env variable(s) that set the field at ``loc`` (``("port",)`` -> ``APP_PORT``)."""
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
        problems.append(f"{field} ({env_names(loc)}): {msg}" if loc else msg)
    return "invalid settings: " + "; ".join(problems)


def profile_name(profile: str | None = None) -> str:
    """``profile``, else ``APP_ENV``, else ``local``; a ``SettingsError`` if it is no profile."""
    name = profile or os.environ.get("APP_ENV") or "local"
    if name not in PROFILES:
        raise SettingsError(
            f"invalid settings: env (APP_ENV): must be one of {', '.join(PROFILES)}, got {name!r}"
        )
    return name


def config_path(profile: str) -> Path:
    """The dotenv file to read: ``APP_CONFIG_FILE`` when set, else the profile's own.

    A relative ``APP_CONFIG_FILE`` is taken from the working directory now. Symlinks are
    kept, not resolved: a Kubernetes volume swaps the target under the same name.
    """
    named = os.environ.get(CONFIG_FILE_VAR, "").strip()
    if not named:
        return PROFILES_DIR / f"{profile}.env"
    path = Path(named).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def environment_digest() -> str:
    """A digest of the variables the settings read from the environment (never shown: they hold secrets)."""
    pairs = sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(_ENV_PREFIXES))
    digest = hashlib.sha256()
    for key, value in pairs:
        digest.update(f"{key}\0{value}\0".encode("utf-8", "surrogateescape"))
    return "sha256:" + digest.hexdigest()


def build_settings(profile: str, path: Path, read: FileRead) -> Settings:
    """Settings for ``profile`` from ``read`` (the file at ``path``, read once) under the environment.

    Variables in the environment beat the file's lines. The file's keys are checked
    first: an ``APP_`` key that is no setting (most likely a typo, which pydantic-settings
    would silently ignore), a seed alias (read from the environment only) or a line
    without ``=`` is refused, by name. Raises ``SettingsError``; no message holds a value.
    """
    named = f" (named by {CONFIG_FILE_VAR})" if os.environ.get(CONFIG_FILE_VAR, "").strip() else ""
    if read.data is None:
        raise SettingsError(f"invalid settings: config file {path}{named}: {read.error}")
    try:
        values = parse_env_file(read.data)
        bad = malformed_lines(read.data)
    except UnicodeDecodeError:
        raise SettingsError(f"invalid settings: config file {path}{named}: not UTF-8 text") from None
    if bad:
        # The line numbers, never the text: the line may hold a secret.
        lines = ", ".join(map(str, bad))
        raise SettingsError(
            f"invalid settings: config file {path}{named}: line {lines} is not KEY=value "
            "(or leaves a quote open)"
        )
    problems = file_key_problems(values)
    if problems:
        raise SettingsError(f"invalid settings: in {path}: " + "; ".join(problems))
    try:
        with pinned_env_file(values):
            return Settings(_env_file=None, env=profile)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def load_settings(profile: str | None = None) -> Settings:
    """Settings for ``profile`` (default: ``APP_ENV``, else ``local``); env vars beat the file.

    The file is ``APP_CONFIG_FILE`` when set, else ``settings/profiles/<profile>.env``.
    """
    name = profile_name(profile)
    path = config_path(name)
    return build_settings(name, path, read_file(path, MAX_CONFIG_BYTES))
