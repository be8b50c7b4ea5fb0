"""Fingerprints on real captures (shared corpus): the Dahua camera's web UI and RTSP, the YI camera's
TLS without SNI, Chrome's GREASE-laden ClientHello and a TLS 1.2 server certificate."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.engine import Engine
from tests.conftest import corpus_path

DAHUA = "38:af:29:bb:bc:ab"


def replay(name: str, tmp_path: Path) -> tuple[list[dict[str, Any]], Engine]:
    cfg = Config()
    cfg.state_dir = tmp_path / "state"
    out = io.StringIO()
    engine = Engine(cfg, events=out)
    flows: dict[int, Any] = {}
    tls_analyzer = next(a for a in engine.analyzers if a.NAME == "fp_tls")
    original = tls_analyzer.packet

    def keep_flow(pkt: Any) -> None:  # remember the flows it saw, to check their tags afterwards
        flows[id(pkt.flow)] = pkt.flow
        original(pkt)

    tls_analyzer.packet = keep_flow  # type: ignore[method-assign]
    try:
        engine.replay([str(corpus_path("pcaps", name))])
        engine.finish()
    finally:
        engine.close()
    engine.kept_flows = list(flows.values())  # type: ignore[attr-defined]
    return [json.loads(line) for line in out.getvalue().splitlines()], engine


def test_dahua_web_login_identifies_dahua_http(tmp_path: Path) -> None:
    events, engine = replay("2ic80_dahua_web.pcapng", tmp_path)
    dev = engine.inventory.get(DAHUA)
    assert dev is not None and dev.maker == "dahua" and dev.maker_source == "http"
    assert list(dev.services) == ["http/80"]
    assert not any(e["event_type"] == "alert" and e["alert"]["rule_id"].startswith("CW-DEV") for e in events)
    # the web client (a PC) is not a Dahua device
    assert all(d.maker is None for d in engine.inventory if d.key != DAHUA)


def test_dahua_rtsp_realm_leaks_serial(tmp_path: Path) -> None:
    _events, engine = replay("2ic80_dahua_rtsp.pcapng", tmp_path)
    dev = engine.inventory.get(DAHUA)
    assert dev is not None and dev.serial == "4H01D66PAJ2FA64" and dev.maker == "dahua"
    assert "rtsp/554" in dev.services


def _ja4(ciphers: str, exts: str, sigs: str, sni: str, alpn: str, version: str) -> str:
    """JA4 by hand from tshark 4.0 fields (tls.handshake.ciphersuite / extension.type / sig_hash_alg)."""

    def grease(v: int) -> bool:
        return v & 0x0F0F == 0x0A0A and v >> 8 == v & 0xFF

    cs = [int(c, 16) for c in ciphers.split(",") if not grease(int(c, 16))]
    ex = [int(e) for e in exts.split(",") if not grease(int(e))]
    b = hashlib.sha256(",".join(f"{c:04x}" for c in sorted(cs)).encode()).hexdigest()[:12]
    c_text = ",".join(f"{e:04x}" for e in sorted(e for e in ex if e not in (0, 16)))
    c_text += "_" + ",".join(s[2:] for s in sigs.split(","))
    c = hashlib.sha256(c_text.encode()).hexdigest()[:12]
    return f"t{version}{sni}{len(cs):02d}{len(ex):02d}{alpn}_{b}_{c}"


# tshark -r zeek_chrome-1250-tls-x25519-kyber.pcap -Y tls.handshake.type==1 -T fields
#   -e tls.handshake.ciphersuite -e tls.handshake.extension.type -e tls.handshake.sig_hash_alg
CHROME = _ja4(
    "0xeaea,0x1301,0x1302,0x1303,0xc02b,0xc02f,0xc02c,0xc030,0xcca9,0xcca8,0xc013,0xc014,0x009c,0x009d,0x002f,0x0035",
    "27242,35,13,11,10,27,17513,51,16,43,23,65281,5,45,65037,18,0,19018",
    "0x0403,0x0804,0x0401,0x0503,0x0805,0x0501,0x0806,0x0601",
    "d",
    "h2",
    "13",
)
# same fields for the YI camera's (0c:8c:24:0b:39:7b) ClientHellos; tls.handshake.version 0x0303
YI = _ja4("0x003d,0x003c,0x0035,0x002f,0x0005,0x0004,0x000a", "13", "0x0501,0x0401,0x0201", "i", "00", "12")


def test_chrome_ja4_ignores_grease(tmp_path: Path) -> None:
    _events, engine = replay("zeek_chrome-1250-tls-x25519-kyber.pcap", tmp_path)
    tagged = [f for f in engine.kept_flows if f.tags.get("sni")]  # type: ignore[attr-defined]
    assert [f.tags["sni"] for f in tagged] == ["lh3.google.com"]
    assert tagged[0].tags["ja4"] == CHROME == "t13d1516h2_8daaf6152771_02713d6af862"


def test_yi_camera_ja4_without_sni_and_phone_sni(tmp_path: Path) -> None:
    _events, engine = replay("mudproject_yi_camera.pcap", tmp_path)
    cam = engine.inventory.get("0c:8c:24:0b:39:7b")
    assert cam is not None and list(cam.ja4) == [YI] and YI.startswith("t12i0701")
    assert not cam.tls_names  # the camera sends no SNI
    phone = engine.inventory.get("f0:25:b7:eb:5e:65")
    assert phone is not None and "api.eu.xiaoyi.com" in phone.tls_names
    assert cam.maker is None and cam.brand is None  # nothing here names the camera's maker


def test_server_certificate_subject_and_issuer(tmp_path: Path) -> None:
    _events, engine = replay("zeek_signed_certificate_timestamp.pcap", tmp_path)
    certs = [f.tags for f in engine.kept_flows if "tls_subject" in f.tags]  # type: ignore[attr-defined]
    assert len(certs) == 1
    assert certs[0]["tls_subject"].startswith("CN=ritter.vg")
    assert "O=COMODO CA Limited" in certs[0]["tls_issuer"] and certs[0]["sni"] == "ritter.vg"
