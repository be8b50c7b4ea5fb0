"""Evidence for analysts: a bounded ring of packets from flows that raised alerts, written as pcap.

When an alert names a flow, the packet that triggered it is kept and the flow is followed (through
the pipeline's `follow`) for up to `per_flow` further packets. The ring holds at most `max_packets`
frames overall, oldest dropped first, so memory stays bounded however many alerts fire. Nothing is
added to the hot path: only followed flows reach this recorder.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

from agent.capture.writer import PcapWriter
from agent.model import Flow, Packet
from analyzers.base import Analyzer

DEFAULT_MAX_PACKETS = 20_000
DEFAULT_PER_FLOW = 200


class EvidenceRing(Analyzer):
    NAME = "evidence"

    def __init__(
        self, path: str | Path, *, max_packets: int = DEFAULT_MAX_PACKETS, per_flow: int = DEFAULT_PER_FLOW
    ) -> None:
        self.path = Path(path)
        self.per_flow = per_flow
        # (ts, linktype, frame bytes, flow id)
        self.frames: deque[tuple[float, int, bytes, int]] = deque(maxlen=max_packets)
        self.counts: dict[int, int] = {}
        self.dirty = False

    def on_alert(self, flow: Flow | None, pkt: Packet | None) -> None:
        if flow is None or flow.flow_id in self.counts:
            return
        self.counts[flow.flow_id] = 0
        if pkt is not None and pkt.flow is flow:
            self._keep(pkt, flow)
        if not flow.ended:
            self.ctx.follow(flow, self)

    def packet(self, pkt: Packet) -> None:
        flow = pkt.flow
        if flow is not None:
            self._keep(pkt, flow)

    def _keep(self, pkt: Packet, flow: Flow) -> None:
        n = self.counts.get(flow.flow_id, 0)
        if n >= self.per_flow:
            self.ctx.unfollow(flow, self)
            return
        self.counts[flow.flow_id] = n + 1
        self.frames.append((pkt.ts, pkt.linktype, bytes(pkt.frame), flow.flow_id))
        self.dirty = True

    def write(self) -> None:
        """Write the ring as one pcap (atomically: temporary file, then rename); frames of a link
        type other than the first one recorded are left out, as pcap holds one link type."""
        if not self.dirty and self.path.exists():
            return
        frames: list[Any] = sorted(self.frames, key=lambda f: f[0])
        linktype = frames[0][1] if frames else 1
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with PcapWriter(tmp, linktype=linktype) as writer:
            for ts, lt, frame, _flow_id in frames:
                if lt == linktype:
                    writer.write(ts, frame)
        os.replace(tmp, self.path)
        self.dirty = False
