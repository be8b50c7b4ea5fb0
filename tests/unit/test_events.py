"""EVE-style events: timestamps, tuple orientation, Community ID, VLANs, key order, and the writer."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import CamwatchError
from agent.events import EventWriter, alert_body, build_event, rfc3339, to_json
from agent.model import LINKTYPE_ETHERNET, Flow, Packet
from agent.stats import Counters

# Community ID spec test vector (corelight/community-id-spec baseline, seed 0).
KNOWN_CID = "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def tcp_flow(**kw) -> Flow:
    base: dict[str, Any] = dict(
        flow_id=1843021188841,
        vlan=(),
        proto=6,
        src_ip="128.232.110.120",
        src_port=34855,
        dest_ip="66.35.250.204",
        dest_port=80,
        src_mac="bc:ad:28:00:00:01",
        dest_mac="00:11:22:33:44:55",
        first_ts=1740910504.0,
        last_ts=1740910504.0,
    )
    base.update(kw)
    return Flow(**base)


def packet(flow: Flow | None = None, **kw) -> Packet:
    base: dict[str, Any] = dict(
        ts=1740910504.5,
        linktype=LINKTYPE_ETHERNET,
        frame=memoryview(b"\x00" * 64),
        vlan=(),
        src_mac=bytes.fromhex("bcad28000001"),
        dest_mac=bytes.fromhex("001122334455"),
        ethertype=0x0800,
        l3_offset=14,
        ip_version=4,
        src_ip_raw=bytes([66, 35, 250, 204]),
        dest_ip_raw=bytes([128, 232, 110, 120]),
        proto=6,
        src_port=80,
        dest_port=34855,
        tcp_flags=0x12,
        payload_offset=54,
        payload_len=0,
        flow=flow,
        from_originator=False,
    )
    base.update(kw)
    return Packet(**base)


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (1740910504.512311, "2025-03-02T10:15:04.512311+00:00"),
        (0.0, "1970-01-01T00:00:00.000000+00:00"),
        (1740910504, "2025-03-02T10:15:04.000000+00:00"),
        (951782400.000001, "2000-02-29T00:00:00.000001+00:00"),
    ],
)
def test_rfc3339_microseconds_utc(ts: float, text: str) -> None:
    assert rfc3339(ts) == text
    assert datetime.fromisoformat(text).timestamp() == pytest.approx(ts, abs=1e-6)


def test_flow_event_uses_originator_tuple_and_known_community_id() -> None:
    flow = tcp_flow()
    # The packet is the server's reply; with a flow given the originator orientation wins.
    event = build_event(
        "destination", {"verdict": "unexpected"}, ts=1740910504.512311, flow=flow, pkt=packet(flow)
    )
    assert event["src_ip"] == "128.232.110.120" and event["src_port"] == 34855
    assert event["dest_ip"] == "66.35.250.204" and event["dest_port"] == 80
    assert event["proto"] == "TCP"
    assert event["community_id"] == KNOWN_CID
    assert event["flow_id"] == 1843021188841
    assert "vlan" not in event  # untagged


def test_golden_line_compact_and_stable_key_order() -> None:
    flow = tcp_flow(vlan=(100, 20))
    event = build_event(
        "alert",
        alert_body(
            "CW-DEST-001", "high", "unexpected destination", "destination", device="bc:ad:28:00:00:01"
        ),
        ts=1740910504.512311,
        flow=flow,
        in_iface="eth1",
        pcap_filename="cam.pcap",
    )
    assert to_json(event) == (
        '{"timestamp":"2025-03-02T10:15:04.512311+00:00","event_type":"alert","flow_id":1843021188841,'
        '"community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","in_iface":"eth1","pcap_filename":"cam.pcap",'
        '"vlan":[100,20],"src_ip":"128.232.110.120","src_port":34855,"dest_ip":"66.35.250.204",'
        '"dest_port":80,"proto":"TCP","alert":{"rule_id":"CW-DEST-001","severity":"high",'
        '"message":"unexpected destination","category":"destination","device":"bc:ad:28:00:00:01"}}'
    )


def test_packet_tuple_when_no_flow_and_ids_from_packet_flow() -> None:
    flow = tcp_flow(vlan=(7,))
    event = build_event("dns", {"rrname": "a.example"}, ts=1.0, pkt=packet(flow, vlan=(7,)))
    assert (event["src_ip"], event["src_port"]) == ("66.35.250.204", 80)
    assert (event["dest_ip"], event["dest_port"]) == ("128.232.110.120", 34855)
    assert event["vlan"] == [7]
    assert event["flow_id"] == flow.flow_id
    assert event["community_id"] == KNOWN_CID  # direction-independent


def test_qinq_vlans_outer_first() -> None:
    event = build_event("device", {"mac": "bc:ad:28:00:00:01"}, ts=1.0, flow=tcp_flow(vlan=(300, 12)))
    assert event["vlan"] == [300, 12]


def test_icmp_carries_type_and_code_not_ports() -> None:
    flow = tcp_flow(proto=1, src_port=8, dest_port=0, src_ip="10.0.0.2", dest_ip="10.0.0.1")
    event = build_event("destination", {"verdict": "allowed"}, ts=1.0, flow=flow)
    assert event["proto"] == "ICMP"
    assert "src_port" not in event and "dest_port" not in event
    assert (event["icmp_type"], event["icmp_code"]) == (8, 0)
    v6 = build_event(
        "destination",
        {"verdict": "allowed"},
        ts=1.0,
        flow=tcp_flow(proto=58, src_ip="fe80::1", dest_ip="ff02::1", src_port=135, dest_port=0),
    )
    assert v6["proto"] == "IPv6-ICMP" and v6["icmp_type"] == 135


def test_non_ip_frame_has_ether_object_and_no_tuple() -> None:
    pkt = packet(ethertype=0x8033, ip_version=0, src_ip_raw=b"", dest_ip_raw=b"", proto=0)
    event = build_event("device", {"mac": "bc:ad:28:00:00:01"}, ts=1.0, pkt=pkt)
    assert "src_ip" not in event and "proto" not in event and "flow_id" not in event
    assert event["ether"] == {
        "src_mac": "bc:ad:28:00:00:01",
        "dest_mac": "00:11:22:33:44:55",
        "ether_type": 0x8033,
    }


def test_event_without_flow_or_packet() -> None:
    event = build_event("stats", {"packets": 3}, ts=2.0)
    assert list(event) == ["timestamp", "event_type", "stats"]


def test_app_proto_from_flow_tags() -> None:
    flow = tcp_flow()
    flow.tags["app_proto"] = "http"
    assert build_event("destination", {"verdict": "allowed"}, ts=1.0, flow=flow)["app_proto"] == "http"


def test_non_json_values_and_non_ascii() -> None:
    event = build_event(
        "device",
        {
            "mac": "bc:ad:28:00:00:01",
            "model": "Kamera\u00e9\x1b[31m",
            "sources": {"oui", "dhcp"},
            "raw": b"\x01\x02",
        },
        ts=1.0,
    )
    line = to_json(event)
    assert line.isascii()
    assert json.loads(line)["device"] == {
        "mac": "bc:ad:28:00:00:01",
        "model": "Kamera\u00e9\x1b[31m",
        "sources": ["dhcp", "oui"],
        "raw": "0102",
    }
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        to_json(build_event("device", {"x": object()}, ts=1.0))


def test_writer_appends_lines_to_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "eve.json"
    counters = Counters()
    with EventWriter(path, counters=counters) as w:
        w.emit("stats", {"packets": 1}, ts=1.0)
        # Line-buffered: the line is on disk before flush/close.
        assert path.read_text().count("\n") == 1
    with EventWriter(str(path)) as w:
        w.emit("alert", alert_body("R", "low", "m", "c"), ts=2.0, flow=tcp_flow())
    lines = path.read_text().splitlines()
    assert [json.loads(x)["event_type"] for x in lines] == ["stats", "alert"]
    assert counters.events == {"stats": 1}


def test_writer_stdout_dash(capsys: pytest.CaptureFixture[str]) -> None:
    w = EventWriter("-")
    w.emit("stats", {"packets": 1}, ts=1.0)
    w.close()
    out = capsys.readouterr().out
    assert json.loads(out)["stats"] == {"packets": 1}


def test_writer_stream_and_disabled() -> None:
    buf = io.StringIO()
    w = EventWriter(buf)
    w.write(build_event("stats", {}, ts=1.0))
    w.close()
    assert not buf.closed  # a stream we did not open is left open
    assert buf.getvalue().endswith("}\n")
    counters = Counters()
    off = EventWriter(None, counters=counters)
    assert not off.enabled
    off.emit("dns", {}, ts=1.0)
    assert counters.events["dns"] == 1 and off.lines == 0


def test_writer_unopenable_path_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(CamwatchError) as info:
        EventWriter(tmp_path / "dir")
    assert str(tmp_path / "dir") in str(info.value) and "\n" not in str(info.value)


def test_writer_reopen_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "eve.json"
    w = EventWriter(path)
    w.emit("stats", {}, ts=1.0)
    path.rename(tmp_path / "eve.json.1")
    w.reopen()
    w.emit("stats", {}, ts=2.0)
    w.close()
    assert path.read_text().count("\n") == 1
    assert (tmp_path / "eve.json.1").read_text().count("\n") == 1


def test_sctp_flow_gets_a_community_id() -> None:
    event = build_event("destination", {"verdict": "allowed"}, ts=1.0, flow=tcp_flow(proto=132))
    assert event["community_id"].startswith("1:")
    assert event["proto"] == "132" and event["dest_port"] == 80 and event["flow_id"] == 1843021188841


def test_flow_the_community_id_library_rejects_still_yields_an_event() -> None:
    flow = tcp_flow()
    flow.src_ip = "not-an-address"  # the library refuses it; the event must survive without the id
    event = build_event("destination", {"verdict": "allowed"}, ts=1.0, flow=flow)
    assert "community_id" not in event
    assert event["dest_port"] == 80 and event["flow_id"] == 1843021188841
