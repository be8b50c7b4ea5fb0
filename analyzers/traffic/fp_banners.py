"""Device fingerprints from service banners in the first packets of TCP flows: HTTP and RTSP heads
(Server header, WWW-Authenticate realm, vendor-specific request paths) and the Dahua (37777) and
Xiongmai (34567) DVRIP headers.

Only a *response* from a local device proves a service: the device gets "<protocol>/<port>" in its
`services`, and the banner patterns of rules/fingerprints.yaml give its maker (and, for Dahua RTSP
realms, its serial number). A request path such as `/RPC2_Login` names the server's maker only
once the server has answered it (a scanner probing `/ISAPI/` proves nothing).
"""

from __future__ import annotations

from typing import Any

from analyzers.base import Analyzer
from analyzers.protocols import dahua_dvrip, http_head, rtsp, xm_dvrip
from analyzers.traffic.fingerprints import FINGERPRINT_RULES, record, rules_for

# first payload packets per direction inspected per flow: RTSP's 401 usually answers the 2nd request
PAYLOAD_PACKETS = 4
_TAG = "fp_banner"  # flow tag: pending request facts, or "done"
DAHUA_DVRIP_PORTS = frozenset({dahua_dvrip.TCP_PORT})
_DVRIP_REPLIES = frozenset({0xB0, 0xB1, 0xB3, 0xB4, 0xF4, 0xF5})


class FpBannerAnalyzer(Analyzer):
    NAME = "fp_banners"
    TCP_PAYLOAD_PACKETS = PAYLOAD_PACKETS
    KNOWN_RULES = FINGERPRINT_RULES

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        self.rules = rules_for(ctx)

    def reload(self) -> None:
        """SIGHUP: re-read rules/fingerprints.yaml (facts already recorded are kept)."""
        self.rules = rules_for(self.ctx)

    def packet(self, pkt: Any) -> None:
        flow = pkt.flow
        if flow is None or pkt.proto != 6 or pkt.payload_len < 4:
            return
        state = flow.tags.get(_TAG)
        if state == "done":
            return
        data = pkt.payload
        first = data[0]
        if first in (0x48, 0x52) or 0x41 <= first <= 0x5A:  # 'H' / 'R' / upper-case method
            head = http_head.parse(data) or rtsp.parse(data)
            if head is not None:
                if head.is_request:
                    self._request(pkt, head)
                else:
                    self._response(pkt, head)
                return
        if not pkt.from_originator:
            self._dvrip_reply(pkt, data)

    # --- HTTP / RTSP ------------------------------------------------------------------------------

    def _request(self, pkt: Any, head: http_head.Head) -> None:
        if head.protocol == "HTTP":
            maker = self.rules.http_path_maker(head.path)
            if maker:
                pkt.flow.tags[_TAG] = {"path_maker": maker, "path": head.path}

    def _response(self, pkt: Any, head: http_head.Head) -> None:
        flow = pkt.flow
        if not self.ctx.is_local(pkt.src_ip, pkt.vlan):
            return
        port = pkt.src_port
        facts: dict[str, Any] = {"service": f"{head.protocol.lower()}/{port}"}
        maker = serial = None
        if head.protocol == "RTSP":
            maker = self.rules.rtsp_server_maker(head.server)
            realm_maker, serial = self.rules.rtsp_realm_facts(head.realm)
            maker = maker or realm_maker
            facts["source"] = "rtsp"
            flow.tags.setdefault("app_proto", "rtsp")
        else:
            maker = self.rules.http_server_maker(head.server) or self.rules.http_realm_maker(head.realm)
            pending = flow.tags.get(_TAG)
            # the server answered a vendor-specific path (2xx, or 401: it exists, login needed)
            answered = head.status is not None and (head.status < 300 or head.status == 401)
            if maker is None and isinstance(pending, dict) and answered:
                maker = pending["path_maker"]
            facts["source"] = "http"
            flow.tags.setdefault("app_proto", "http")
        if maker:
            facts["maker"] = maker
        if serial:
            facts["serial"] = serial
        record(self.ctx, mac=pkt.src_mac_text, ip=pkt.src_ip, ts=pkt.ts, vlan=pkt.vlan, pkt=pkt, flow=flow,
               **facts)  # fmt: skip
        # RTSP keeps looking until a realm was seen (the serial is in the 401's realm)
        if serial or (maker and (head.protocol == "HTTP" or head.realm is not None)):
            flow.tags[_TAG] = "done"

    # --- DVRIP --------------------------------------------------------------------------------------

    def _dvrip_reply(self, pkt: Any, data: memoryview) -> None:
        sport = pkt.src_port
        facts: dict[str, Any] | None = None
        if data[0] == xm_dvrip.HEAD:
            msg = xm_dvrip.parse(data)
            if msg is not None and msg.version == 1 and msg.msg_id in xm_dvrip.MSG_NAMES:
                facts = {"source": "dvrip", "maker": "xiongmai", "service": f"xm-dvrip/{sport}"}
                pkt.flow.tags.setdefault("app_proto", "dvrip")
        elif sport in DAHUA_DVRIP_PORTS and data[0] in _DVRIP_REPLIES and dahua_dvrip.parse(data) is not None:
            facts = {"source": "dvrip", "maker": "dahua", "service": f"dahua-dvrip/{sport}"}
            pkt.flow.tags.setdefault("app_proto", "dahua-dvrip")
        if facts is None or not self.ctx.is_local(pkt.src_ip, pkt.vlan):
            return
        record(self.ctx, mac=pkt.src_mac_text, ip=pkt.src_ip, ts=pkt.ts, vlan=pkt.vlan, pkt=pkt,
               flow=pkt.flow, **facts)  # fmt: skip
        pkt.flow.tags[_TAG] = "done"
