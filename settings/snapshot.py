"""One immutable, validated settings snapshot with its version, and what a reload did."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from settings.config import Settings
from settings.live import RESTART_FIELDS
from settings.redacted import redacted_settings, settings_digest

__all__ = ["ConfigSnapshot", "RELOAD_RESULTS", "ReloadOutcome", "ReloadResult"]

#: What a reload did: ``applied`` (a new version is in force), ``unchanged`` (same input, or
#: the same settings), ``invalid`` (did not validate), ``refused`` (valid, but a field that
#: needs a restart changed, or a subscriber's check said no; nothing applied), ``failed``
#: (applied and in force, but a subscriber raised while applying it).
ReloadOutcome = Literal["applied", "unchanged", "invalid", "refused", "failed"]
RELOAD_RESULTS: Final[tuple[ReloadOutcome, ...]] = ("applied", "unchanged", "invalid", "refused", "failed")


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did, and why it ran; ``message`` names fields, never a value."""

    result: ReloadOutcome
    message: str
    #: What asked for it: ``SIGHUP``, ``file changed``, or whatever the caller said.
    reason: str
    #: The version in force afterwards.
    version: int
    #: Wall-clock time (``time.time()``), for display only.
    at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the config API."""
        return {
            "result": self.result,
            "message": self.message,
            "reason": self.reason,
            "version": self.version,
            "at": _iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Settings in force, with their version (from 1), the file they came from and its digest."""

    settings: Settings
    version: int
    source: Path
    #: ``sha256:<hex>`` of the file's bytes as read (internal: tells a changed file; never
    #: published, see ``settings_digest``).
    digest: str
    #: Wall-clock time (``time.time()``) it was loaded, for display only.
    loaded_at: float
    #: The published digest: of the redacted settings, not of the file (``settings_digest``);
    #: computed once, as the status stream shows it every second.
    settings_digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings_digest", settings_digest(self.settings))

    def redacted(
        self, last: ReloadResult | None = None, restart_fields: Sequence[str] = RESTART_FIELDS
    ) -> dict[str, Any]:
        """JSON-able view for the API, with the last reload: no secret ever (see ``redacted_settings``)."""
        return {
            "version": self.version,
            "source": str(self.source),
            "digest": self.settings_digest,
            "loaded_at": _iso(self.loaded_at),
            "last_reload": None if last is None else last.as_dict(),
            "restart_required_for": list(restart_fields),
            "settings": redacted_settings(self.settings),
        }
