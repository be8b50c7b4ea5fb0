"""Device fingerprints from discovery replies: Hikvision SADP (UDP 37020, EtherType 0x8033), Dahua
DHIP (UDP 37810), Dahua legacy (UDP 5050), Xiongmai (UDP 34569) and ONVIF WS-Discovery (UDP 3702).

The sender of a reply is the device: its model, serial, firmware, announced brand and the maker the
protocol implies go to the inventory (analyzers.traffic.fingerprints.record), which emits a
`device` event only when something changed. Requests (probes) carry no device facts.
"""

from __future__ import annotations

from typing import Any

from analyzers.base import Analyzer
from analyzers.protocols import dahua_legacy, dhip, onvif, sadp, xm_dvrip
from analyzers.traffic.fingerprints import FINGERPRINT_RULES, record, rules_for


class FpDiscoveryAnalyzer(Analyzer):
    NAME = "fp_discovery"
    UDP_PORTS = frozenset(
        {sadp.UDP_PORT, dhip.UDP_PORT, dahua_legacy.UDP_PORT, xm_dvrip.DISCOVERY_PORT, onvif.UDP_PORT}
    )
    ETHERTYPES = frozenset({sadp.ETHERTYPE})
    KNOWN_RULES = FINGERPRINT_RULES

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        self.rules = rules_for(ctx)
        self.seen = 0  # replies recognised (tests, debugging)

    def reload(self) -> None:
        """SIGHUP: re-read rules/fingerprints.yaml (facts already recorded are kept)."""
        self.rules = rules_for(self.ctx)

    def packet(self, pkt: Any) -> None:
        if pkt.ip_version == 0:
            self._l2_sadp(pkt)
            return
        if pkt.proto != 17 or not pkt.payload_len:
            return
        src_ip = pkt.src_ip
        if not self.ctx.is_local(src_ip, pkt.vlan):
            return
        sport = pkt.src_port
        data = pkt.payload
        # Replies come *from* the discovery port (SADP, DHIP and WS-Discovery replies may also go
        # to it as multicast), so try each parser whose port is on either side.
        ports = (sport, pkt.dest_port)
        if sadp.UDP_PORT in ports:
            self._sadp(pkt, data)
        elif dhip.UDP_PORT in ports:
            self._dhip(pkt, data)
        elif dahua_legacy.UDP_PORT in ports:
            self._dahua_legacy(pkt, data)
        elif xm_dvrip.DISCOVERY_PORT in ports:
            self._xm(pkt, data)
        elif onvif.UDP_PORT in ports:
            self._onvif(pkt, data)

    # --- protocols --------------------------------------------------------------------------------

    def _emit(self, pkt: Any, **facts: Any) -> None:
        self.seen += 1
        ip = pkt.src_ip if pkt.ip_version else facts.pop("l2_ip", None)
        record(
            self.ctx, mac=pkt.src_mac_text, ip=ip, ts=pkt.ts, vlan=pkt.vlan, pkt=pkt, flow=pkt.flow, **facts
        )

    def _brand(self, announced: str | None, model: str | None) -> tuple[str | None, str | None]:
        brand = self.rules.brand_for(announced) or self.rules.brand_for_model(model)
        return brand, self.rules.maker_of(brand)

    def _sadp(self, pkt: Any, data: memoryview) -> None:
        msg = sadp.parse(data)
        if msg is None or not msg.is_reply:
            return
        model = msg.model
        brand, brand_maker = self._brand(None, model)
        self._emit(
            pkt,
            source="sadp",
            maker="hikvision",  # SADP is Hikvision firmware's own discovery protocol
            brand=brand,
            brand_maker=brand_maker,
            model=model,
            serial=msg.serial,
            firmware=msg.firmware,
            oem_code=msg.oem_code,
            service=f"sadp/{sadp.UDP_PORT}",
        )

    def _l2_sadp(self, pkt: Any) -> None:
        if pkt.ethertype != sadp.ETHERTYPE or pkt.src_mac is None:
            return
        msg = sadp.parse_l2(pkt.frame[pkt.l3_offset :])
        if msg is None or not msg.is_response:
            return
        ip = msg.ipv4 if self.ctx.is_local(msg.ipv4, pkt.vlan) else None
        self._emit(pkt, source="sadp", maker="hikvision", l2_ip=ip, service="sadp-l2")

    def _dhip(self, pkt: Any, data: memoryview) -> None:
        msg = dhip.parse(data)
        if msg is None or not msg.is_reply:
            return
        model = msg.info("DeviceType")
        # Vendor / Manufacturer name the label; the platform's own "Dahua" yields to an OEM name
        named = [self.rules.brand_for(msg.info(k)) for k in ("Vendor", "Manufacturer")]
        brands = [b for b in named if b]
        announced = next((b for b in brands if b != "dahua"), brands[0] if brands else None)
        brand, brand_maker = self._brand(announced, model)
        self._emit(
            pkt,
            source="dhip",
            maker="dahua",  # DHIP is Dahua firmware's protocol, whatever the label says
            brand=brand,
            brand_maker=brand_maker,
            model=model,
            serial=msg.info("SerialNo"),
            firmware=msg.info("Version"),
            service=f"dhip/{dhip.UDP_PORT}",
        )

    def _dahua_legacy(self, pkt: Any, data: memoryview) -> None:
        msg = dahua_legacy.parse(data)
        if msg is None:
            return
        brand, brand_maker = self._brand(None, msg.model)
        self._emit(
            pkt,
            source="dahua-discovery",
            maker="dahua",
            brand=brand,
            brand_maker=brand_maker,
            model=msg.model,
            serial=msg.serial,
            service=f"dahua-discovery/{dahua_legacy.UDP_PORT}",
        )

    def _xm(self, pkt: Any, data: memoryview) -> None:
        msg = xm_dvrip.parse(data)
        if msg is None or not msg.net_common or msg.msg_id == xm_dvrip.DISCOVERY_REQ:
            return
        self._emit(
            pkt,
            source="xm-discovery",
            maker="xiongmai",
            serial=msg.text("SN"),
            service=f"xm-discovery/{xm_dvrip.DISCOVERY_PORT}",
        )

    def _onvif(self, pkt: Any, data: memoryview) -> None:
        msg = onvif.parse(data)
        if msg is None or not msg.is_announcement:
            return
        model = msg.hardware
        # an ONVIF friendly name is free text ("Front door"): it counts only when it is a known brand
        brand = self.rules.brand_for(msg.scope("mfr") or msg.scope("manufacturer"))
        if brand is None:
            named = self.rules.brand_for(msg.name)
            brand = named if named in self.rules.brands else self.rules.brand_for_model(model)
        brand_maker = self.rules.maker_of(brand)
        self._emit(
            pkt,
            source="onvif",
            brand=brand,
            brand_maker=brand_maker,
            model=model,
            service=f"ws-discovery/{onvif.UDP_PORT}",
        )
