"""Passive DNS per device: which name did *this* device resolve to reach this address?

Records come only from DNS responses addressed to the device itself (another host's answers never
name a camera's destination: a camera that connects to an address it never resolved is a
`direct_ip` case). mDNS is not fed here.

* Key: (device key, answer address). The device key is agent.inventory.device_key(): the MAC, or the
  IP when the capture has no link layer.
* Value: the *queried* name(s). CNAME chains are followed from the question name, and an address
  counts only if its owner name is on that chain (out-of-chain records in a response are ignored).
* Expiry is by capture time: TTL (the smallest along the chain) clamped to
  [config.dns_min_ttl, config.dns_max_ttl]; the minimum keeps short-TTL CDN answers usable for the
  connection that follows them.
* Bounded: LRU over (device, address) entries (`analyzers.dns.cache_size`, default 100,000), and at
  most 8 names per entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from agent.catalogue import normalize_name

DEFAULT_CACHE_SIZE = 100_000
_MAX_NAMES_PER_ENTRY = 8
_MAX_CHAIN = 16
ADDRESS_TYPES = ("A", "AAAA")


class PassiveDNS:
    """Per-device (address -> names) memory of DNS answers."""

    def __init__(
        self,
        config: Any = None,
        *,
        min_ttl: float | None = None,
        max_ttl: float | None = None,
        max_entries: int | None = None,
    ) -> None:
        self.min_ttl = float(min_ttl if min_ttl is not None else getattr(config, "dns_min_ttl", 60.0))
        self.max_ttl = float(max_ttl if max_ttl is not None else getattr(config, "dns_max_ttl", 86_400.0))
        if max_entries is None:
            opts = (getattr(config, "analyzer_options", None) or {}).get("dns", {})
            max_entries = int(opts.get("cache_size", DEFAULT_CACHE_SIZE))
        self.max_entries = max(1, max_entries)
        # (device, ip) -> {name: expiry}; dict order = recency of the name for that entry.
        self._entries: OrderedDict[tuple[str, str], dict[str, float]] = OrderedDict()
        self.evictions = 0
        self._loaded = False

    def __len__(self) -> int:
        return len(self._entries)

    def clamp(self, ttl: float) -> float:
        return min(max(float(ttl), self.min_ttl), self.max_ttl)

    def add(self, device: str, ip: str, name: str, ttl: float, now: float) -> None:
        """Remember that `device` resolved `name` to `ip` at capture time `now`."""
        key = (device, ip)
        names = self._entries.get(key)
        if names is None:
            names = self._entries[key] = {}
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1
        else:
            self._entries.move_to_end(key)
        expiry = now + self.clamp(ttl)
        old = names.pop(name, None)
        names[name] = expiry if old is None else max(old, expiry)
        if len(names) > _MAX_NAMES_PER_ENTRY:
            del names[next(iter(names))]

    def add_response(
        self,
        device: str,
        qname: str,
        answers: Iterable[tuple[str, str, str, float]],
        now: float,
    ) -> list[str]:
        """Record a response: `answers` are (owner, rrtype, rdata, ttl) with rrtype names ('A', 'CNAME'...).

        Returns the addresses recorded (for the owner chain starting at `qname`).
        """
        q = normalize_name(qname)
        cnames: dict[str, tuple[str, float]] = {}
        addrs: list[tuple[str, str, float]] = []
        for owner, rrtype, rdata, ttl in answers:
            if rrtype == "CNAME":
                cnames.setdefault(normalize_name(owner), (normalize_name(rdata), float(ttl)))
            elif rrtype in ADDRESS_TYPES:
                addrs.append((normalize_name(owner), rdata, float(ttl)))
        # Walk the chain from the question: owner name -> smallest TTL on the way to it.
        chain: dict[str, float] = {q: float("inf")}
        cur, ttl_so_far = q, float("inf")
        for _ in range(_MAX_CHAIN):
            nxt = cnames.get(cur)
            if nxt is None or nxt[0] in chain:
                break
            ttl_so_far = min(ttl_so_far, nxt[1])
            cur = nxt[0]
            chain[cur] = ttl_so_far
        recorded = []
        for owner, ip, ttl in addrs:
            chain_ttl = chain.get(owner)
            if chain_ttl is None:
                continue
            self.add(device, ip, q, min(ttl, chain_ttl), now)
            recorded.append(ip)
        return recorded

    def names_for(self, device: str, ip: str, now: float) -> list[str]:
        """Unexpired names `device` resolved to `ip`, most recent first."""
        key = (device, ip)
        names = self._entries.get(key)
        if not names:
            return []
        live = [n for n, exp in names.items() if exp >= now]
        if len(live) != len(names):
            if not live:
                del self._entries[key]
                return []
            for n in [n for n, exp in names.items() if exp < now]:
                del names[n]
        live.reverse()
        return live

    def name_for(self, device: str, ip: str, now: float) -> str | None:
        """The most recent unexpired name `device` resolved to `ip`, or None."""
        names = self.names_for(device, ip, now)
        return names[0] if names else None

    def load(self, store: Any) -> int:
        """Restore names from `store.load_names()` (records with device, ip, name, last_seen), each
        valid for `min_ttl` after its last sighting: enough to name flows that continue across a
        restart, never enough to name a replay of an unrelated day. Idempotent."""
        if store is None or self._loaded:
            return 0
        self._loaded = True
        count = 0
        for rec in store.load_names() or []:
            device, ip, name, last = rec[0], rec[1], rec[2], rec[-1]
            self.add(str(device), str(ip), str(name), self.min_ttl, float(last))
            count += 1
        return count

    def expire(self, now: float) -> int:
        """Drop every expired name (optional housekeeping; lookups already ignore expired ones)."""
        dropped = 0
        for key in list(self._entries):
            names = self._entries[key]
            for n in [n for n, exp in names.items() if exp < now]:
                del names[n]
                dropped += 1
            if not names:
                del self._entries[key]
        return dropped
