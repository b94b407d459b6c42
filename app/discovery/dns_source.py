"""Instances from DNS: SRV records (host and port), or A and AAAA records of a name and a fixed port."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from yarl import URL

from app.discovery.source import DiscoveryError

__all__ = ["DnsSource"]

#: Seconds one query may take in all (``lifetime``) and per server try (``timeout``).
LIFETIME = 3.0
TIMEOUT = 2.0
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


class DnsSource:
    """A DNS name polled at its records' TTL (clamped to ``[min_ttl, max_ttl]``).

    ``srv=True`` reads SRV records: each target's addresses and the record's port make
    the instances; only the lowest-priority group that resolves is used (RFC 2782's
    backups stay backups); weights are not used. ``srv=False`` reads A and AAAA records
    of ``name`` and uses ``port``. The scheme and path of every instance are
    ``base_url``'s. After a failure the name is asked again after ``min_ttl``.
    """

    kind = "dns"

    def __init__(
        self,
        name: str,
        *,
        srv: bool,
        base_url: str,
        description: str,
        port: int | None = None,
        nameservers: Sequence[tuple[str, int]] = (),
        min_ttl: float = 5.0,
        max_ttl: float = 300.0,
    ) -> None:
        if not srv and port is None:
            raise ValueError("an A/AAAA lookup needs a port")
        self.description = description
        self._name = dns.name.from_text(name)  # absolute: no search domain is ever appended
        self._srv = srv
        self._port = port
        self._base = URL(base_url)
        self._nameservers = tuple(nameservers)
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._wake: asyncio.Event | None = None
        self._resolved_at = -float("inf")

    def initial(self) -> tuple[str, ...] | None:
        """None: resolving needs the loop."""
        return None

    def refresh(self) -> None:
        """Re-resolve now, or ``min_ttl`` after the last resolution if that is later."""
        if self._wake is not None:
            self._wake.set()

    async def updates(self) -> AsyncIterator[tuple[str, ...] | DiscoveryError]:
        """The resolved set now, then again after each TTL (or an early ``refresh``)."""
        # Made in the loop that waits on it: the source may be built outside any loop.
        self._wake = asyncio.Event()
        resolver: dns.asyncresolver.Resolver | None = None
        while True:
            self._wake.clear()
            item: tuple[str, ...] | DiscoveryError
            try:
                if resolver is None:
                    resolver = self._resolver()
                item, ttl = await self._resolve(resolver)
                delay = min(max(ttl, self._min_ttl), self._max_ttl)
            except DiscoveryError as exc:
                item, delay = exc, self._min_ttl
            self._resolved_at = time.monotonic()
            yield item
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        assert self._wake is not None  # noqa: S101 - set by updates(), the only caller
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
            # Woken by refresh(): never sooner than min_ttl after the last resolution,
            # so a storm of failing calls cannot turn into a storm of queries.
            rest = self._resolved_at + self._min_ttl - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)

    def _resolver(self) -> dns.asyncresolver.Resolver:
        try:
            if self._nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(address, port) for address, port in self._nameservers
                ]
            else:
                resolver = dns.asyncresolver.Resolver()
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{self.description}: no resolver: {exc}") from None
        resolver.lifetime = LIFETIME
        resolver.timeout = TIMEOUT
        return resolver

    async def _resolve(self, resolver: dns.asyncresolver.Resolver) -> tuple[tuple[str, ...], float]:
        if not self._srv:
            assert self._port is not None  # noqa: S101 - checked in __init__
            addresses, ttl = await self._addresses(resolver, self._name, None)
            if not addresses:
                raise DiscoveryError(f"{self.description}: {self._name} has no A or AAAA record")
            return tuple(self._url(a, self._port) for a in addresses), ttl
        answer = await self._query(resolver, self._name, dns.rdatatype.SRV)
        if answer is None or answer.rrset is None:
            raise DiscoveryError(f"{self.description}: {self._name} has no SRV record")
        ttl = float(answer.rrset.ttl)
        records = sorted(answer.rrset, key=lambda r: (r.priority, -r.weight, r.target.to_text(), r.port))
        for _, group in itertools.groupby(records, key=lambda r: r.priority):
            urls: list[str] = []
            for record in group:
                if record.target == dns.name.root:  # "." : the service is not offered there
                    continue
                addresses, address_ttl = await self._addresses(resolver, record.target, answer.response)
                if addresses:
                    ttl = min(ttl, address_ttl)
                    urls.extend(self._url(a, record.port) for a in addresses)
            if urls:
                return tuple(urls), ttl
        raise DiscoveryError(f"{self.description}: no SRV target of {self._name} has an address")

    async def _addresses(
        self, resolver: dns.asyncresolver.Resolver, name: dns.name.Name, response: dns.message.Message | None
    ) -> tuple[list[str], float]:
        """``name``'s addresses (sorted, IPv4 first) and their smallest TTL; the additional section first."""
        rrsets = []
        if response is not None:
            rrsets = [r for r in response.additional if r.name == name and r.rdtype in _ADDRESS_TYPES]
        if not rrsets:
            # Both asked at once, and both awaited before an error is raised: no query is left running.
            answers = await asyncio.gather(
                *(self._query(resolver, name, t) for t in _ADDRESS_TYPES), return_exceptions=True
            )
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            rrsets = [a.rrset for a in answers if isinstance(a, dns.resolver.Answer) and a.rrset is not None]
        addresses = sorted(
            {(r.rdtype, r.address) for rrset in rrsets for r in rrset},
        )
        ttl = min((float(r.ttl) for r in rrsets), default=self._max_ttl)
        return [address for _, address in addresses], ttl

    async def _query(
        self, resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | None:
        """The answer; None when the name does not exist; ``DiscoveryError`` when no server answered."""
        try:
            return await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            if name == self._name:
                raise DiscoveryError(f"{self.description}: {name} does not exist (NXDOMAIN)") from None
            return None
        except (dns.exception.DNSException, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DiscoveryError(
                f"{self.description}: {dns.rdatatype.to_text(rdtype)} {name}: {reason}"
            ) from None

    def _url(self, address: str, port: int) -> str:
        return str(URL.build(scheme=self._base.scheme, host=address, port=port, path=self._base.path))
