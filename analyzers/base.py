"""The traffic-analyzer plug-in interface.

An analyzer is a small class, in the style of mitmproxy addons: it *declares* what it wants to
see with class attributes, and implements only the hooks it needs. The pipeline reads the
declarations once at start-up and builds dispatch tables, so an analyzer that does not subscribe
to a packet costs nothing on the hot path.

Declarations (all optional):
    NAME            unique short name, used in logs, metrics and config (`analyzers.<NAME>.*`).
    UDP_PORTS       packets whose UDP source or destination port is in this set go to `packet()`.
    TCP_PORTS       same for TCP (every segment, including those without payload).
    ETHERTYPES      non-IP frames with these EtherTypes go to `packet()` (e.g. 0x8033 SADP, 0x88cc LLDP).
    TCP_PAYLOAD_PACKETS  N > 0: the first N payload-carrying TCP packets of *every* flow, in each
                    direction, go to `packet()` (for protocol detection on any port: HTTP, TLS...).
    UDP_PAYLOAD_PACKETS  same for UDP flows.
    FLOW_EVENTS     True: `flow_start(flow, pkt)` on a flow's first packet and `flow_end(flow)` when it
                    is evicted or the capture ends.
    KNOWN_RULES     (rule_id, severity) pairs of the alerts it can raise (pre-initialised metric series).

Hooks (all optional):
    setup(ctx)          once, before the first packet; keep `ctx` to emit events and reach shared state.
    packet(pkt)         a subscribed packet (agent.model.Packet; `pkt.l3()` gives the dpkt object).
    flow_start(flow, pkt)
    flow_end(flow)
    tick(now)           about once per second of capture time (timeouts, learning windows).
    done()              at the end of a replay or on shutdown: flush what is pending.
    reload()            SIGHUP in `camwatch run`: re-read the rule files cached at setup() from
                        `ctx.config.rules_dir` (already updated; `ctx.catalogue` is the new endpoint
                        catalogue). Load everything first and swap it in last, so that an exception
                        (bad YAML, invalid rule) leaves the previous rules in force; the daemon logs
                        it and counts a failed reload. Keep runtime state (flows followed, keys
                        already reported). Not a packet hook: the pipeline never dispatches it.

Adding an analyzer = one module in analyzers/traffic/ + one line in analyzers/__init__.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from agent.model import Flow, Packet


class Context(Protocol):
    """What the pipeline offers analyzers (implemented by agent.pipeline.PipelineContext)."""

    config: Any  # agent.config.Config
    inventory: Any  # agent.inventory.Inventory
    dns: Any  # agent.dnscache.PassiveDNS
    policy: Any  # agent.policy.Policy
    geo: Any  # agent.geo.GeoLookup
    catalogue: Any  # agent.catalogue.EndpointCatalogue
    counters: Any  # agent.stats.Counters (plain ints/dicts, published by the metrics collector)
    store: Any  # agent.store.StateStore (batched writes; the engine commits)

    def emit(
        self,
        event_type: str,
        body: dict[str, Any],
        *,
        ts: float,
        flow: Flow | None = None,
        pkt: Packet | None = None,
    ) -> None:
        """Write one EVE-style event; `body` becomes the nested object named after `event_type`."""
        ...

    def follow(self, flow: Flow, analyzer: Analyzer) -> None:
        """Deliver every later packet of `flow` to `analyzer` (carving a download, say)."""
        ...

    def unfollow(self, flow: Flow, analyzer: Analyzer) -> None: ...

    def expect(self, proto: int, ip: str, port: int, analyzer: Analyzer, until: float) -> None:
        """Follow the next flow to/from ip:port that starts before capture time `until`
        (FTP data connections, TFTP transfers)."""
        ...

    def is_local(self, ip: str, vlan: tuple[int, ...] = ()) -> bool:
        """True when the address (or VLAN) belongs to the configured camera network."""
        ...


class Analyzer:
    """Base class with empty declarations; subclasses override what they need."""

    NAME: ClassVar[str] = ""
    UDP_PORTS: ClassVar[frozenset[int]] = frozenset()
    TCP_PORTS: ClassVar[frozenset[int]] = frozenset()
    ETHERTYPES: ClassVar[frozenset[int]] = frozenset()
    TCP_PAYLOAD_PACKETS: ClassVar[int] = 0
    UDP_PAYLOAD_PACKETS: ClassVar[int] = 0
    FLOW_EVENTS: ClassVar[bool] = False
    # (rule_id, severity) of every alert the analyzer can raise; metrics start these series at 0
    KNOWN_RULES: ClassVar[tuple[tuple[str, str], ...]] = ()

    ctx: Context

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx

    # The hooks below are no-ops here; the pipeline wires only those a subclass overrides.
    def packet(self, pkt: Packet) -> None:
        """A packet matching the declared subscriptions."""

    def flow_start(self, flow: Flow, pkt: Packet) -> None:
        """The first packet of a new flow (FLOW_EVENTS analyzers only)."""

    def flow_end(self, flow: Flow) -> None:
        """A flow left the table (timeout, capacity, end of capture)."""

    def tick(self, now: float) -> None:
        """About once per second of capture time."""

    def done(self) -> None:
        """End of input: flush pending state."""

    def reload(self) -> None:
        """Re-read rule files after SIGHUP; raise (keeping the old rules) when they are invalid."""


# Hook names the pipeline looks for; only hooks a subclass actually defines are wired up.
HOOKS = ("packet", "flow_start", "flow_end", "tick", "done")


def defines(analyzer: Analyzer, hook: str) -> bool:
    """True when the analyzer's class overrides `hook` (so the pipeline calls it)."""
    return any(hook in vars(cls) for cls in type(analyzer).__mro__ if cls not in (Analyzer, object))
