"""TLS fingerprints from the first packets of TCP flows: the ClientHello (SNI, ALPN, JA4) and, for
TLS <= 1.2, the server's certificate (subject / issuer).

A local device's ClientHello adds its JA4 to the device (`ja4`, bounded) and the SNI to `tls_names`;
a certificate served by a local device may name its maker (rules/fingerprints.yaml `tls.subject`)
and adds "https/<port>" to its services. Flow tags for other analyzers: `app_proto` "tls", `sni`,
`ja4`, `tls_subject`, `tls_issuer`. Handshakes split over several segments are buffered (bounded)
in arrival order; a stream that is not TLS is dropped after its first bytes.
"""

from __future__ import annotations

from typing import Any

from analyzers.base import Analyzer
from analyzers.protocols import tls
from analyzers.traffic.fingerprints import FINGERPRINT_RULES, record, rules_for

PAYLOAD_PACKETS = 6
MAX_BUFFER = 32_768
_CLIENT, _SERVER = "fp_tls_c", "fp_tls_s"  # flow tags: bytes buffered so far, or "done"


class FpTlsAnalyzer(Analyzer):
    NAME = "fp_tls"
    TCP_PAYLOAD_PACKETS = PAYLOAD_PACKETS
    KNOWN_RULES = FINGERPRINT_RULES

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        self.rules = rules_for(ctx)
        self.hellos = 0
        self.certificates = 0

    def reload(self) -> None:
        """SIGHUP: re-read rules/fingerprints.yaml (facts already recorded are kept)."""
        self.rules = rules_for(self.ctx)

    def packet(self, pkt: Any) -> None:
        flow = pkt.flow
        if flow is None or pkt.proto != 6 or not pkt.payload_len:
            return
        tag = _CLIENT if pkt.from_originator else _SERVER
        buf = flow.tags.get(tag)
        if buf == "done":
            return
        data = pkt.payload
        if buf is None:
            # a TLS handshake record: 0x16 0x03 0x0N
            if pkt.payload_len < 3 or data[0] != tls.CONTENT_HANDSHAKE or data[1] != 3:
                flow.tags[tag] = "done"
                return
            buf = bytes(data)
        else:
            buf = buf + bytes(data)
        done = self._client(pkt, buf) if tag == _CLIENT else self._server(pkt, buf)
        flow.tags[tag] = "done" if done or len(buf) >= MAX_BUFFER else buf

    def _client(self, pkt: Any, buf: bytes) -> bool:
        hello = tls.parse_client_hello(buf)
        if hello is None:
            return False  # maybe incomplete: wait for the next segment
        self.hellos += 1
        flow = pkt.flow
        fp = tls.ja4(hello)
        flow.tags["app_proto"] = "tls"
        flow.tags["ja4"] = fp
        if hello.sni:
            flow.tags["sni"] = hello.sni
        if self.ctx.is_local(pkt.src_ip, pkt.vlan):
            dev = record(self.ctx, mac=pkt.src_mac_text, ip=pkt.src_ip, ts=pkt.ts, vlan=pkt.vlan, pkt=pkt,
                         flow=flow, source="tls", ja4=fp)  # fmt: skip
            if dev is not None and hello.sni:
                self.ctx.inventory.add_tls_name(dev.key, hello.sni)
        return True

    def _server(self, pkt: Any, buf: bytes) -> bool:
        messages, _complete, other = tls.handshake_messages(buf)
        if not messages:
            return other
        server = tls.parse_server(buf)
        if server is None:
            return True  # not a ServerHello: nothing to learn
        if server.encrypted:
            return True
        if not server.certificates:
            # Certificate not (completely) here yet; give up once the handshake moved on
            return other or any(t not in (tls.HS_SERVER_HELLO,) for t, _ in messages)
        leaf = server.leaf()
        if leaf is None:
            return True
        self.certificates += 1
        flow = pkt.flow
        flow.tags["tls_subject"] = leaf["subject"]
        flow.tags["tls_issuer"] = leaf["issuer"]
        if self.ctx.is_local(pkt.src_ip, pkt.vlan):
            maker = self.rules.tls_subject_maker(leaf["subject"])
            facts: dict[str, Any] = {"source": "tls", "service": f"https/{pkt.src_port}"}
            if maker:
                facts["maker"] = maker
            record(self.ctx, mac=pkt.src_mac_text, ip=pkt.src_ip, ts=pkt.ts, vlan=pkt.vlan, pkt=pkt,
                   flow=flow, **facts)  # fmt: skip
        return True
