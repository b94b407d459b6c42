"""Keeps one upstream's last good set of instances and hands each change to the balancer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from app.discovery.instances import normalise_instances
from app.discovery.metrics import DISCOVERY_RESULTS, discovery_families
from app.discovery.source import DiscoveryError, DiscoverySource

__all__ = ["DiscoveryRunner"]

log = logging.getLogger("app.discovery")

#: Restart delays after a source fails unexpectedly: doubling from the first to the last.
RESTART_MIN = 1.0
RESTART_MAX = 30.0


class DiscoveryRunner:
    """Keeps the last good set of one upstream's instances and tells the balancer of each change.

    An update that is empty, lists an invalid URL, or is an error changes nothing: it is
    counted as rejected and logged once (a source that keeps failing the same way does
    not fill the log). A set equal to the current one is counted and not applied.
    """

    def __init__(
        self,
        source: DiscoverySource,
        apply: Callable[[tuple[str, ...]], None],
        *,
        service_name: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._source = source
        self._apply = apply
        self._service = service_name
        families = discovery_families(REGISTRY if registry is None else registry)
        # Label children made once, here: every result series exists from the start (at 0).
        self._counters = {r: families.updates.labels(service_name, source.kind, r) for r in DISCOVERY_RESULTS}
        self._gauge = families.instances.labels(service_name)
        self._counts = dict.fromkeys(DISCOVERY_RESULTS, 0)
        self._instances: tuple[str, ...] = ()
        self._last_error: str | None = None
        self._logged_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._restart_delay = RESTART_MIN
        self._gauge.set(0)
        try:
            first = source.initial()
        except DiscoveryError as exc:
            self._reject(str(exc))
        else:
            if first is not None:
                self._offer(first)

    @property
    def instances(self) -> tuple[str, ...]:
        """The last good set (empty until the first good update)."""
        return self._instances

    @property
    def last_error(self) -> str | None:
        """Why the latest update was rejected; None once a good update has followed."""
        return self._last_error

    @property
    def running(self) -> bool:
        """True while a watch task runs (in whichever loop started it)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching the source, in the running loop (a second call does nothing)."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"discovery:{self._service}:{self._source.kind}"
        )

    async def wait_ready(self, timeout: float) -> bool:
        """True once a good set exists, waiting at most ``timeout`` seconds for it."""
        if self._instances:
            return True
        if self._ready is None:
            # Made here, in the loop that waits, not in __init__ (which may run outside one).
            self._ready = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return bool(self._instances)

    def refresh(self) -> None:
        """Ask the source for an early re-resolve (every instance has failed); safe from any thread.

        The balancer says so from whichever loop the failing attempt ran on (the sync
        twins have their own): the source is told in the loop that watches it.
        """
        task = self._task
        if task is None or task.done():
            self._source.refresh()
            return
        loop = task.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._source.refresh)

    async def aclose(self) -> None:
        """Stop watching: the task is cancelled and awaited, and the source has released what it held."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        # asyncio.wait never raises the task's own CancelledError, so a cancellation of
        # the caller still propagates while the task's is absorbed.
        await asyncio.wait({task})

    def status(self) -> dict[str, Any]:
        """The source, the set's size, updates by result and the last error, for the status API."""
        return {
            "source": self._source.kind,
            "description": self._source.description,
            "instances": len(self._instances),
            "updates": dict(self._counts),
            "last_error": self._last_error,
        }

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
                reason = "the source stopped"
            except Exception as exc:
                reason = f"the source failed: {type(exc).__name__}: {exc}"
                delay = self._restart_delay
                if reason != self._logged_error:
                    # Logged here, once, with its traceback; _reject below stays quiet.
                    self._logged_error = reason
                    log.error(
                        "discovery for %s (%s): %s; restarting it in %.0f s",
                        self._service,
                        self._source.description,
                        reason,
                        delay,
                        exc_info=True,
                        extra={"fields": self._fields(event="discovery_source_failed")},
                    )
            self._reject(reason)
            delay = self._restart_delay
            await asyncio.sleep(delay)
            self._restart_delay = min(delay * 2, RESTART_MAX)

    async def _follow(self) -> None:
        updates = self._source.updates()
        try:
            async for item in updates:
                # A source that delivers again has recovered: its next failure waits the least.
                self._restart_delay = RESTART_MIN
                self._offer(item)
        finally:
            # Closed here, in this task, so the source's cleanup (a session, a watcher
            # thread) runs now rather than whenever the generator is collected.
            aclose = getattr(updates, "aclose", None)
            if aclose is not None:
                await aclose()

    def _offer(self, item: tuple[str, ...] | DiscoveryError) -> None:
        if isinstance(item, DiscoveryError):
            self._reject(str(item))
            return
        try:
            found = normalise_instances(item)
        except DiscoveryError as exc:
            self._reject(str(exc))
            return
        recovered = self._last_error is not None
        self._last_error = self._logged_error = None
        if found == self._instances:
            self._count("unchanged")
            if recovered:
                log.info(
                    "discovery for %s (%s) recovered: %d instances, unchanged",
                    self._service,
                    self._source.description,
                    len(found),
                    extra={"fields": self._fields(event="discovery_recovered", instances=len(found))},
                )
            return
        try:
            self._apply(found)
        except Exception as exc:
            # The balancer refused the set: keep the old one so the next update tries again.
            reason = f"applying the update failed: {type(exc).__name__}: {exc}"
            if reason != self._logged_error:
                self._logged_error = reason
                log.exception(
                    "discovery for %s: %s",
                    self._service,
                    reason,
                    extra={"fields": self._fields(event="discovery_apply_failed")},
                )
            self._reject(reason)
            return
        before = set(self._instances)
        added = sum(1 for i in found if i not in before)
        removed = len(before - set(found))
        self._instances = found
        self._gauge.set(len(found))
        self._count("applied")
        if self._ready is not None:
            self._ready.set()
        log.info(
            "discovery for %s (%s): %d instances (+%d, -%d)",
            self._service,
            self._source.description,
            len(found),
            added,
            removed,
            extra={
                "fields": self._fields(
                    event="discovery_applied", instances=len(found), added=added, removed=removed
                )
            },
        )

    def _reject(self, reason: str) -> None:
        self._count("rejected")
        self._last_error = reason
        if reason == self._logged_error:
            return
        self._logged_error = reason
        log.warning(
            "discovery for %s (%s): update rejected, keeping %d instances: %s",
            self._service,
            self._source.description,
            len(self._instances),
            reason,
            extra={"fields": self._fields(event="discovery_rejected", instances=len(self._instances))},
        )

    def _count(self, result: str) -> None:
        self._counts[result] += 1
        self._counters[result].inc()

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"peer.service": self._service, "discovery.source": self._source.kind, **more}
