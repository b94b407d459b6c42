"""The live config store: one validated settings snapshot, reloaded on a file change or on request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from app.discovery.watch import DEBOUNCE_MS, RECHECK_MS, FileRead, read_file, watch_file
from app.redaction import register_secret, scrub
from settings.config import Settings
from settings.live import RESTART_FIELDS, changed_fields, restart_needed
from settings.loader import (
    MAX_CONFIG_BYTES,
    SettingsError,
    build_settings,
    config_path,
    environment_digest,
    profile_name,
)
from settings.metrics import config_families
from settings.redacted import secret_values
from settings.snapshot import RELOAD_RESULTS, ConfigSnapshot, ReloadOutcome, ReloadResult

__all__ = ["Apply", "Check", "ConfigStore"]

log = logging.getLogger("settings.store")

#: ``check(old, new)``: what stops ``new`` from being applied (one line each, no values).
Check = Callable[[Settings, Settings], list[str]]
#: ``apply(old, new)``: put ``new`` in force in place.
Apply = Callable[[Settings, Settings], None]

#: A changed file is read again this much later, until two reads agree: a writer caught
#: half way is not reloaded.
SETTLE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class _Subscriber:
    name: str
    check: Check | None
    apply: Apply


def _log_level(old: Settings, new: Settings) -> None:
    """The root logger's level, where ``configure_logging`` set it at start."""
    if new.log_level != old.log_level:
        logging.getLogger().setLevel(new.log_level)


class ConfigStore:
    """Holds the settings in force as an immutable snapshot, and replaces it whole on a reload.

    The file is ``APP_CONFIG_FILE`` when set, else the profile's; variables in the
    environment beat its lines, so a setting given in the environment cannot be changed
    live through the file (the file's line is read, and loses). A reload (``reload``, the
    file watch of ``start``/``run``, SIGHUP through ``settings.signals``):

    1. reads the file once; the same bytes under the same environment are ``unchanged``;
    2. builds and validates the whole new ``Settings``: if it fails, ``invalid``, and the
       old snapshot stays (logged once with the fields and reasons, never a value); an
       empty file is ``invalid`` too (a writer that has truncated it and not yet written);
    3. refuses (``refused``, nothing applied) a change to a field of ``restart_fields``,
       naming it and its variable, and any problem a subscriber's ``check`` reports;
    4. calls every subscriber's ``apply(old, new)`` in subscription order, then makes the
       new snapshot current with the next version: ``applied``. Equal settings from other
       bytes (a comment) are ``unchanged``: the digest moves, the version does not.

    An ``apply`` that raises is logged and the others still run; the new snapshot is then
    current anyway, and the result is ``failed``, naming the subscriber. Rolling back
    would need every subscriber that had applied to apply the old settings again, which
    can fail too; checks are where a subscriber says no, and only a bug fails later.
    Reloads are serialised; a subscriber must not reload from inside ``apply``.
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        path: Path | None = None,
        registry: CollectorRegistry | None = None,
        restart_fields: Sequence[str] = RESTART_FIELDS,
        settle_seconds: float = SETTLE_SECONDS,
        debounce_ms: int = DEBOUNCE_MS,
        recheck_ms: int = RECHECK_MS,
        force_polling: bool | None = None,
        clock: Callable[[], float] = time.time,
        initial: Settings | None = None,
    ) -> None:
        """Load the first snapshot (version 1): a ``SettingsError`` here, as ``load_settings`` raises.

        ``initial``: version 1's settings, when the caller has them already (the container's,
        which a test may have overridden); the file is still read for its digest, so a
        reload compares against what is on disk now.
        """
        self.profile = profile_name(profile)
        self.path = path if path is not None else config_path(self.profile)
        self.restart_fields = tuple(restart_fields)
        self._settle = settle_seconds
        self._debounce_ms = debounce_ms
        self._recheck_ms = recheck_ms
        self._force_polling = force_polling
        self._clock = clock
        env = environment_digest()
        read = read_file(self.path, MAX_CONFIG_BYTES)
        settings = initial if initial is not None else build_settings(self.profile, self.path, read)
        self._register_secrets(settings)
        # Given settings may come from an older read of the file (or none: a test's): no
        # digest, so the first look at the file compares settings, and applies an edit
        # made since they were read.
        digest = read.digest if initial is None else ""
        self._current = ConfigSnapshot(settings, 1, self.path, digest, clock())
        self._env = env
        self._last: ReloadResult | None = None
        self._logged: str | None = None
        self._subscribers: list[_Subscriber] = [_Subscriber("log_level", None, _log_level)]
        self._lock = threading.RLock()
        self._reloading = False
        self._task: asyncio.Task[None] | None = None
        families = config_families(REGISTRY if registry is None else registry)
        # Every result's series exists from the start, at 0.
        self._counters = {result: families.reloads.labels(result) for result in RELOAD_RESULTS}
        self._version = families.version
        self._info = families.info
        self._published: str | None = None
        self._publish()

    def _publish(self) -> None:
        """The version and the settings' digest in force, as metrics."""
        current = self._current
        self._version.set(current.version)
        digest = current.settings_digest.removeprefix("sha256:")[:12]
        if digest != self._published:
            if self._published is not None:
                with contextlib.suppress(KeyError):  # another store of this process (tests) took it
                    self._info.remove(self._published)
            self._info.labels(digest).set(1)
            self._published = digest

    @property
    def current(self) -> ConfigSnapshot:
        """The snapshot in force."""
        return self._current

    @property
    def settings(self) -> Settings:
        """The settings in force: ``current.settings``."""
        return self._current.settings

    @property
    def last_result(self) -> ReloadResult | None:
        """What the latest reload did; None before the first."""
        return self._last

    def redacted(self) -> dict[str, Any]:
        """The snapshot in force and the latest reload's result, for the API: no secret ever."""
        return self._current.redacted(self._last, self.restart_fields)

    def subscribe(self, check: Check | None, apply: Apply, *, name: str | None = None) -> Callable[[], None]:
        """Take part in every reload; returns a function that ends it.

        ``check`` may veto a reload; ``apply`` puts it in force, after every check has
        passed, in subscription order. ``name`` (default: ``apply``'s) names it in logs.
        """
        subscriber = _Subscriber(name or str(getattr(apply, "__qualname__", apply)), check, apply)
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    def reload(self, reason: str) -> ReloadResult:
        """Read the file and apply it if it changed and is valid; never raises."""
        with self._lock:
            return self._reload(read_file(self.path, MAX_CONFIG_BYTES), reason)

    @property
    def running(self) -> bool:
        """True while the file watch runs (in whichever loop started it)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Watch the file in the running loop (a second call does nothing); see ``run``."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self.run(), name="config:watch")

    async def aclose(self) -> None:
        """Stop the watch ``start`` began: cancelled and awaited, its watcher thread stopped."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task})

    async def run(self) -> None:
        """Reload each time the file's content changes, settled; until cancelled.

        The file's directory is watched (see ``watch_file``): an edit in place, an atomic
        rename and a Kubernetes ``..data`` symlink swap are all seen, a burst of writes
        gives one read once the content holds still, and bytes already seen are skipped.
        """
        watch = watch_file(
            self.path,
            max_bytes=MAX_CONFIG_BYTES,
            since=self._current.digest,
            settle_seconds=self._settle,
            debounce_ms=self._debounce_ms,
            recheck_ms=self._recheck_ms,
            force_polling=self._force_polling,
            name="config:watch",
        )
        async with contextlib.aclosing(watch) as reads:
            async for read in reads:
                with self._lock:
                    self._reload(read, "file changed")

    def _reload(self, read: FileRead, reason: str) -> ReloadResult:
        if self._reloading:
            return self._finish("refused", "a reload is already being applied; try again", reason)
        self._reloading = True
        try:
            return self._reload_once(read, reason)
        finally:
            self._reloading = False

    def _reload_once(self, read: FileRead, reason: str) -> ReloadResult:
        old = self._current
        env = environment_digest()
        new = self._validated(read, env, reason)
        if isinstance(new, ReloadResult):
            return new
        if new == old.settings:
            # Other bytes, same settings (a comment, the order of lines): nothing to apply.
            self._current = replace(old, digest=read.digest)
            self._env = env
            return self._finish("unchanged", "the settings are the same", reason)
        problems = self._problems(old.settings, new)
        if problems:
            return self._finish(
                "refused", "; ".join(problems) + f"; nothing applied, version {old.version} stays", reason
            )
        self._register_secrets(new)
        failed = self._apply(old.settings, new)
        self._current = ConfigSnapshot(new, old.version + 1, self.path, read.digest, self._clock())
        self._env = env
        self._publish()
        changed = ", ".join(changed_fields(old.settings, new))
        if failed:
            return self._finish(
                "failed",
                f"version {self._current.version} is in force (changed: {changed}), but applying it "
                f"failed in {'; '.join(failed)}",
                reason,
            )
        return self._finish("applied", f"version {self._current.version} (changed: {changed})", reason)

    def _validated(self, read: FileRead, env: str, reason: str) -> Settings | ReloadResult:
        """The whole new settings from ``read``; or the result when there is nothing to apply."""
        version = self._current.version
        if read.digest == self._current.digest and env == self._env:
            return self._finish("unchanged", f"{self.path} has not changed", reason)
        if read.data is not None and not read.data.strip():
            # What `> file` or open("w") leaves before the first write: every setting would
            # fall back to its default. A file meant to be empty can be given at start.
            return self._finish("invalid", f"{self.path} is empty; version {version} stays", reason)
        if read.data is not None and not read.data.endswith(b"\n"):
            # Most likely a writer caught mid-line; its last line would be cut, or lost.
            return self._finish(
                "invalid",
                f"{self.path} does not end with a newline (half written?); version {version} stays",
                reason,
            )
        try:
            return build_settings(self.profile, self.path, read)
        except SettingsError as exc:
            return self._finish("invalid", f"{exc}; version {version} stays", reason)

    def _problems(self, old: Settings, new: Settings) -> list[str]:
        """Why ``new`` cannot be applied: fields that need a restart, then each subscriber's check."""
        problems: list[str] = []
        restart = restart_needed(old, new, self.restart_fields)
        if restart:
            problems.append(
                f"{', '.join(restart)} cannot change while running; restart to apply "
                f"{'it' if len(restart) == 1 else 'them'}"
            )
        for subscriber in self._subscribers:
            if subscriber.check is None:
                continue
            try:
                problems += subscriber.check(old, new)
            except Exception as exc:  # a check that breaks vetoes: nothing half-checked is applied
                log.exception("config: the check of %s raised", subscriber.name)
                problems.append(f"the check of {subscriber.name} raised {type(exc).__name__}")
        return problems

    def _apply(self, old: Settings, new: Settings) -> list[str]:
        """Every subscriber's ``apply``, in order; the ones that raised, by name and error."""
        failed: list[str] = []
        for subscriber in self._subscribers:
            try:
                subscriber.apply(old, new)
            except Exception as exc:  # the others still apply: see the class docstring
                log.exception("config: applying the new settings failed in %s", subscriber.name)
                failed.append(f"{subscriber.name} ({type(exc).__name__}: {scrub(str(exc))})")
        return failed

    def _finish(self, result: ReloadOutcome, message: str, reason: str) -> ReloadResult:
        """Record, count and log one reload's result (a refusal logged once until something else happens)."""
        done = ReloadResult(result, message, reason, self._current.version, self._clock())
        self._last = done
        self._counters[result].inc()
        if result in ("invalid", "refused"):
            if message != self._logged:
                log.warning("config: reload (%s) %s: %s", reason, result, message)
                self._logged = message
            return done
        self._logged = None
        if result == "unchanged":
            log.debug("config: reload (%s) unchanged: %s", reason, message)
        elif result == "applied":
            log.info("config: reload (%s) applied %s", reason, message)
        else:
            log.error("config: reload (%s) %s: %s", reason, result, message)
        return done

    @staticmethod
    def _register_secrets(settings: Settings) -> None:
        # Before anything can log them: a new API key is masked from the first line on.
        for secret in secret_values(settings):
            register_secret(secret)
