"""A dotenv file's content, read once, handed to pydantic-settings in place of its path."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic_settings import BaseSettings, DotEnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

__all__ = ["dotenv_source", "malformed_lines", "parse_env_file", "pinned_env_file"]

# The lines being built from, set only around one Settings(...) call: pydantic-settings
# would otherwise read the file itself, a second read that could see another content
# than the one hashed.
_pinned: ContextVar[Mapping[str, str | None] | None] = ContextVar("settings_pinned_env_file", default=None)


def parse_env_file(data: bytes) -> dict[str, str | None]:
    """The ``KEY=value`` lines of a dotenv file's bytes, as pydantic-settings parses a file.

    A line without ``=`` gives None. Raises ``UnicodeDecodeError`` when ``data`` is not UTF-8.
    """
    return dotenv_values(stream=io.StringIO(data.decode("utf-8")))


def malformed_lines(data: bytes) -> list[int]:
    """The numbers of the lines python-dotenv cannot parse (``KEY: value``, a quote left open).

    ``dotenv_values`` skips such a line with a warning, so the setting it meant would
    silently fall back to its default: the caller refuses the file instead. Raises
    ``UnicodeDecodeError`` when ``data`` is not UTF-8.
    """
    return [b.original.line for b in parse_stream(io.StringIO(data.decode("utf-8"))) if b.error]


@contextlib.contextmanager
def pinned_env_file(values: Mapping[str, str | None]) -> Iterator[None]:
    """While inside, settings built with ``_env_file=None`` take their file lines from ``values``."""
    token = _pinned.set(values)
    try:
        yield
    finally:
        _pinned.reset(token)


class _PinnedDotEnvSource(DotEnvSettingsSource):
    """A dotenv source whose lines are given, not read: the same parsing, no file access."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str | None]) -> None:
        self._values = values  # before super().__init__, which loads the variables
        super().__init__(settings_cls, env_file=None)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # What DotEnvSettingsSource does to a file's lines: case folding, "null" as None.
        return parse_env_vars(
            self._values, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def dotenv_source(settings_cls: type[BaseSettings], like: DotEnvSettingsSource) -> DotEnvSettingsSource:
    """``settings_cls``'s dotenv source: the pinned lines when set, else the file(s) ``like`` reads."""
    values = _pinned.get()
    if values is not None:
        return _PinnedDotEnvSource(settings_cls, values)
    if like.settings_cls is settings_cls:
        return like
    return DotEnvSettingsSource(
        settings_cls, env_file=like.env_file, env_file_encoding=like.env_file_encoding
    )
