"""Flow identifiers: Community ID v1 (corelight spec) and a 64-bit EVE-style flow_id."""

from __future__ import annotations

import functools
import hashlib

import communityid

_CID = communityid.CommunityID(seed=0, use_base64=True)

_PROTO_CTOR = {
    6: communityid.FlowTuple.make_tcp,
    17: communityid.FlowTuple.make_udp,
    132: communityid.FlowTuple.make_sctp,
}


@functools.lru_cache(maxsize=65536)
def community_id(proto: int, src_ip: str, src_port: int, dest_ip: str, dest_port: int) -> str:
    """Community ID v1 (seed 0, base64) of a flow; ICMP types/codes travel in the port fields."""
    if proto in _PROTO_CTOR:
        tpl = _PROTO_CTOR[proto](src_ip, dest_ip, src_port, dest_port)
    elif proto == 1:
        tpl = communityid.FlowTuple.make_icmp(src_ip, dest_ip, src_port, dest_port)
    elif proto == 58:
        tpl = communityid.FlowTuple.make_icmp6(src_ip, dest_ip, src_port, dest_port)
    else:
        tpl = communityid.FlowTuple.make_ip(src_ip, dest_ip, proto)
    return str(_CID.calc(tpl))


def flow_id_for(key: tuple[object, ...], first_ts: float) -> int:
    """Stable positive 63-bit id from the flow key and its start time (fits a JSON int / SQLite int)."""
    digest = hashlib.blake2b(repr((key, round(first_ts, 6))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF
