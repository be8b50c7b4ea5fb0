"""The flow table: bidirectional flows keyed on (VLANs, proto, addresses, ports), with idle and
active timeouts and a hard size cap. Evictions are counted by reason.

Each flow is stored under both its forward and its reverse key, so the hot path finds a packet's
flow, and its direction, with a single dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.model import Flow
from agent.stats import Counters

# TCP flows that saw FIN or RST are dropped sooner than idle ones.
CLOSED_TCP_TIMEOUT = 15.0
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


class FlowTable:
    """Owns every live Flow; `on_end` is called for each flow as it leaves the table."""

    __slots__ = ("active_timeout", "by_key", "counters", "idle_timeout", "live", "max_flows", "on_end")

    def __init__(
        self,
        *,
        idle_timeout: float,
        active_timeout: float,
        max_flows: int,
        counters: Counters,
        on_end: Callable[[Flow], None],
    ) -> None:
        self.idle_timeout = idle_timeout
        self.active_timeout = active_timeout
        self.max_flows = max_flows
        self.counters = counters
        self.on_end = on_end
        # key -> (flow, packet travels originator->responder when looked up with this key)
        # Both directions' keys map to the flow; a packet is forward when its key equals flow.key.
        # (No (flow, direction) tuples as values: 112 bytes a flow saved.)
        self.by_key: dict[tuple[object, ...], Flow] = {}
        # flows in creation order: the oldest is evicted first when the cap is hit
        self.live: dict[int, Flow] = {}

    def __len__(self) -> int:
        return len(self.live)

    def insert(self, flow: Flow, reverse_key: tuple[object, ...]) -> None:
        if len(self.live) >= self.max_flows:
            oldest = next(iter(self.live.values()))
            self.evict(oldest, "capacity")
        self.by_key[reverse_key] = flow
        self.by_key[flow.key] = flow
        self.live[flow.flow_id] = flow
        self.counters.flows_total += 1

    def evict(self, flow: Flow, reason: str | None) -> None:
        """Remove a flow; `reason` None means the capture ended (not counted as an eviction)."""
        key = flow.key
        self.by_key.pop(key, None)
        # reverse key: swap the two (addr, port) halves; layout is (vlan, proto, a, ap, b, bp)
        self.by_key.pop((key[0], key[1], key[4], key[5], key[2], key[3]), None)
        self.live.pop(flow.flow_id, None)
        if reason is not None:
            self.counters.flows_evicted[reason] += 1
        flow.ended = True
        self.on_end(flow)

    def sweep(self, now: float) -> None:
        """Evict flows idle for longer than their timeout, or active for longer than the active timeout."""
        idle, active = self.idle_timeout, self.active_timeout
        expired: list[tuple[Flow, str]] = []
        for flow in self.live.values():
            quiet = now - flow.last_ts
            if quiet > idle or (quiet > CLOSED_TCP_TIMEOUT and flow.tcp_flags_seen & (TCP_FIN | TCP_RST)):
                expired.append((flow, "idle"))
            elif now - flow.first_ts > active:
                expired.append((flow, "active"))
        for flow, reason in expired:
            self.evict(flow, reason)

    def drain(self) -> None:
        """End every flow (end of capture or shutdown)."""
        for flow in list(self.live.values()):
            self.evict(flow, None)
