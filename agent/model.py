"""Core value types shared by the pipeline and the analyzers: packets handed to analyzers, flows.

The hot path never builds these per packet: a `Flow` exists once per 5-tuple, and a `Packet`
is built only for the packets an analyzer subscribed to (see analyzers/base.py).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import dpkt

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "IPv6-ICMP"}

# Link types we decode (pcap LINKTYPE_* values).
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229


# Text forms of the addresses in use, shared by every flow and event that names them (a fleet has
# few addresses and many flows). Cleared when it grows past the bound, never evicted piecemeal.
_TEXT: dict[bytes, str] = {}
_TEXT_MAX = 100_000


def ip_text(raw: bytes) -> str:
    """Render a 4- or 16-byte address as text (C speed; only called once per flow/packet object)."""
    if type(raw) is not bytes:
        raw = bytes(raw)
    text = _TEXT.get(raw)
    if text is None:
        if len(_TEXT) >= _TEXT_MAX:
            _TEXT.clear()
        text = _TEXT[raw] = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    return text


def mac_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if type(raw) is not bytes:
        raw = bytes(raw)
    text = _TEXT.get(raw)
    if text is None:
        if len(_TEXT) >= _TEXT_MAX:
            _TEXT.clear()
        text = _TEXT[raw] = raw.hex(":")
    return text


@dataclass(slots=True, eq=False)
class Flow:
    """A bidirectional conversation keyed on (VLANs, proto, addresses, ports).

    `src_*` is the originator: the sender of the first packet seen, unless that packet was
    plainly a reply (TCP SYN+ACK), in which case the roles are swapped.
    """

    flow_id: int
    vlan: tuple[int, ...]
    proto: int
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    src_mac: str | None
    dest_mac: str | None
    first_ts: float
    last_ts: float
    pkts_toserver: int = 0
    pkts_toclient: int = 0
    bytes_toserver: int = 0
    bytes_toclient: int = 0
    tcp_flags_seen: int = 0
    # payload-carrying packets seen per direction (drives TCP/UDP_PAYLOAD_PACKETS subscriptions)
    payload_pkts_toserver: int = 0
    payload_pkts_toclient: int = 0
    # analyzers that asked to see every packet of this flow (ctx.follow / ctx.expect)
    followers: list[Any] | None = None
    ended: bool = False
    key: tuple[Any, ...] = ()  # flow-table key in originator orientation
    in_iface: str | None = None
    # Analyzers attach their conclusions here (verdict, service, app protocol...).
    tags: dict[str, Any] = field(default_factory=dict)
    _community_id: str | None = None

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))

    @property
    def community_id(self) -> str:
        if self._community_id is None:
            from agent.flowid import community_id

            self._community_id = community_id(
                self.proto, self.src_ip, self.src_port, self.dest_ip, self.dest_port
            )
        return self._community_id


@dataclass(slots=True, eq=False)
class Packet:
    """One decoded packet, built only for analyzers that subscribed to it.

    `frame` is the whole captured frame from the link layer; offsets index into it.
    `from_originator` is True when the packet travels in the flow's src -> dest direction.
    """

    ts: float
    linktype: int
    frame: memoryview
    vlan: tuple[int, ...]
    src_mac: bytes | None
    dest_mac: bytes | None
    ethertype: int
    l3_offset: int
    ip_version: int  # 4, 6, or 0 for non-IP frames
    src_ip_raw: bytes
    dest_ip_raw: bytes
    proto: int
    src_port: int
    dest_port: int
    tcp_flags: int
    payload_offset: int
    payload_len: int
    flow: Flow | None
    from_originator: bool = True
    _l3: Any = None

    @property
    def payload(self) -> memoryview:
        return self.frame[self.payload_offset : self.payload_offset + self.payload_len]

    @property
    def src_ip(self) -> str:
        return ip_text(self.src_ip_raw) if self.src_ip_raw else ""

    @property
    def dest_ip(self) -> str:
        return ip_text(self.dest_ip_raw) if self.dest_ip_raw else ""

    @property
    def src_mac_text(self) -> str | None:
        return mac_text(self.src_mac)

    @property
    def dest_mac_text(self) -> str | None:
        return mac_text(self.dest_mac)

    def l3(self) -> Any:
        """Full dpkt object for the network layer, built on first use (raw bytes for non-IP frames)."""
        if self._l3 is None:
            raw = bytes(self.frame[self.l3_offset :])
            if self.ip_version == 4:
                self._l3 = dpkt.ip.IP(raw)
            elif self.ip_version == 6:
                self._l3 = dpkt.ip6.IP6(raw)
            else:
                self._l3 = raw
        return self._l3
