"""The sample capture generator: determinism, the bundled file, and its content as Wireshark sees it."""

from __future__ import annotations

import ipaddress
import re
import struct
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from agent import samplegen
from agent.capture.pcapfile import CaptureReader
from agent.samplegen import BASE_TIME, DEFAULT_PACKETS, DEFAULT_SEED, SAMPLE_HOSTS, generate
from tests.conftest import require_tool

SAMPLE = Path(samplegen.__file__).resolve().parent / "sample" / "camera_vlan.pcap"
DEVICES = {h["name"]: h for h in SAMPLE_HOSTS if h["kind"] == "device"}
REMOTES = [h for h in SAMPLE_HOSTS if h["kind"] == "internet"]
DEVICE_BY_IP = {h["ip"]: name for name, h in DEVICES.items()}
LOCAL = ipaddress.ip_network("192.168.10.0/24")

FIELDS = [
    "frame.number", "frame.time_epoch", "eth.src", "eth.dst", "vlan.id", "ieee8021ad.id", "ip.src", "ip.dst",
    "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.flags.syn", "udp.srcport", "udp.dstport",
    "udp.length", "frame.protocols", "dns.flags.response", "dns.qry.name", "dns.qry.type", "dns.a",
    "dns.cname", "dns.resp.ttl", "dns.count.answers", "dhcp.option.dhcp", "dhcp.option.type",
    "dhcp.option.hostname", "dhcp.option.vendor_class_id", "dhcp.option.request_list_item",
    "dhcp.option.mudurl", "rtp.ssrc", "rtp.p_type", "rtsp.method", "rtsp.transport", "rtsp.status",
    "http.server", "http.request.uri", "tls.handshake.extensions_server_name", "icmp.type", "icmpv6.type",
    "arp.opcode", "data.data",
]  # fmt: skip


def _tshark(path: Path, *args: str) -> str:
    tshark = require_tool("tshark")
    return subprocess.run(
        [tshark, "-n", "-r", str(path), *args], capture_output=True, text=True, check=True, timeout=300
    ).stdout


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """One dict per frame of the bundled sample, fields as tshark dissects them ('|' joins repeats)."""
    args = ["-T", "fields", "-E", "separator=\t", "-E", "aggregator=|"]
    for f in FIELDS:
        args += ["-e", f]
    out = _tshark(SAMPLE, *args)
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


def _many(value: str) -> list[str]:
    return [v for v in value.split("|") if v] if value else []


# -- determinism and shape --------------------------------------------------------------------------


def test_default_seed_reproduces_the_bundled_sample(tmp_path: Path) -> None:
    out = tmp_path / "sample.pcap"
    assert generate(out) == DEFAULT_PACKETS
    assert out.read_bytes() == SAMPLE.read_bytes(), "bundled sample is stale: run `make sample`"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    generate(a, 20_000, 7)
    generate(b, 20_000, 7)
    generate(c, 20_000, 8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_bundled_sample_shape() -> None:
    assert SAMPLE.stat().st_size < 1_000_000
    with CaptureReader(SAMPLE) as reader:
        assert reader.format == "pcap" and reader.interfaces[0]["linktype"] == 1
        ts = [t for batch in reader.batches() for t in batch.ts]
    assert len(ts) == DEFAULT_PACKETS
    assert ts == sorted(ts)
    assert BASE_TIME <= ts[0] < BASE_TIME + 2
    assert 540 < ts[-1] - ts[0] <= 600  # about ten minutes


def _classify(path: Path) -> Counter[str]:
    """Rough traffic classes by headers, with the project's own reader (no tshark: big files)."""
    kinds: Counter[str] = Counter()
    nvr = bytes(int(x) for x in DEVICES["nvr-01"]["ip"].split("."))
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            data = batch.data
            for off in batch.offsets:
                etype = struct.unpack_from("!H", data, off + 12)[0]
                p = off + 14
                while etype in (0x8100, 0x88A8):
                    etype = struct.unpack_from("!H", data, p + 2)[0]
                    p += 4
                if etype != 0x0800:
                    kinds["other"] += 1
                    continue
                proto = data[p + 9]
                sport, dport = struct.unpack_from("!HH", data, p + 20)
                if proto == 17 and bytes(data[p + 16 : p + 20]) == nvr and sport % 2 == 0 and dport % 2 == 0:
                    kinds["rtp"] += 1
                elif proto == 17 and 53 in (sport, dport):
                    kinds["dns"] += 1
                elif proto == 17 and {sport, dport} == {67, 68}:
                    kinds["dhcp"] += 1
                else:
                    kinds["other"] += 1
    return kinds


def test_bigger_files_keep_the_mix_and_the_exact_count(tmp_path: Path) -> None:
    small = _classify(SAMPLE)
    out = tmp_path / "big.pcap"
    assert generate(out, 60_000) == 60_000
    big = _classify(out)
    assert sum(big.values()) == 60_000
    assert 0.85 < big["rtp"] / 60_000 < 0.99  # mostly RTP
    # periodic activities run more often, so DNS and DHCP grow too (renewals appear)
    assert big["dns"] > 2 * small["dns"]
    assert big["dhcp"] > small["dhcp"]


def test_too_few_packets_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        samplegen.main(["--out", str(tmp_path / "x.pcap"), "--packets", "100"])
    assert info.value.code == 2
    assert "--packets must be at least" in capsys.readouterr().err


def test_snaplen_cuts_frames_but_keeps_lengths(tmp_path: Path) -> None:
    out = tmp_path / "snap.pcap"
    samplegen.main(["--out", str(out), "--packets", "3000", "--snaplen", "128"])
    with CaptureReader(out) as reader:
        batches = list(reader.batches())
    assert max(c for b in batches for c in b.caplens) == 128
    assert max(o for b in batches for o in b.origlens) > 1000


# -- what Wireshark says about the bundled sample ------------------------------------------------------


def test_tshark_finds_no_malformed_packet_and_no_bad_checksum() -> None:
    assert _tshark(SAMPLE, "-Y", "_ws.malformed") == ""
    checks = []
    for proto in ("ip", "tcp", "udp"):  # off by default in Wireshark; ICMP and ICMPv6 are always checked
        checks += ["-o", f"{proto}.check_checksum:TRUE"]
    statuses = [f"{p}.checksum.status != 1" for p in ("ip", "tcp", "udp", "icmp", "icmpv6")]
    assert _tshark(SAMPLE, *checks, "-Y", " || ".join(statuses)) == ""
    # the filter is live: it does match frames whose checksum is good
    assert len(_tshark(SAMPLE, *checks, "-Y", "udp.checksum.status == 1").splitlines()) > 1000


def test_tshark_expert_info_has_no_warnings_or_errors() -> None:
    """TCP sequence analysis included: no retransmissions, lost segments or unseen ACKs."""
    expert = _tshark(SAMPLE, "-q", "-z", "expert")
    assert "Errors (" not in expert and "Warnings (" not in expert, expert


def test_every_frame_is_dissected_past_the_link_layer(rows: list[dict[str, Any]]) -> None:
    assert len(rows) == DEFAULT_PACKETS
    layers = Counter(r["frame.protocols"].split(":")[-1] for r in rows)
    assert "eth" not in layers and "ethertype" not in layers, layers


def test_vlan_tags(rows: list[dict[str, Any]]) -> None:
    pc_mac = DEVICES["admin-pc"]["mac"]
    stacks: dict[frozenset[str], set[tuple[str, str]]] = defaultdict(set)
    for r in rows:
        stack = (r["ieee8021ad.id"], r["vlan.id"])
        if r["ieee8021ad.id"]:
            assert stack == ("100", "10") and pc_mac in (r["eth.src"], r["eth.dst"])
        elif r["vlan.id"]:
            assert r["vlan.id"] == "10"
        if r["ip.src"] and r["ip.dst"] != "255.255.255.255" and r["ip.src"] != "0.0.0.0":
            stacks[frozenset((r["ip.src"], r["ip.dst"]))].add(stack)
    counts = Counter((r["ieee8021ad.id"], r["vlan.id"]) for r in rows)
    assert counts[("", "10")] > 100 and counts[("100", "10")] > 50 and counts[("", "")] > 1000
    # one tag stack per conversation, in both directions (flows are keyed by VLAN)
    assert {pair: s for pair, s in stacks.items() if len(s) > 1} == {}
    # camera <-> NVR traffic is untagged; camera <-> internet is tagged 10
    nvr = DEVICES["nvr-01"]["ip"]
    assert all(s == {("", "")} for pair, s in stacks.items() if nvr in pair)
    for remote in REMOTES:
        assert all(s == {("", "10")} for pair, s in stacks.items() if remote["ip"] in pair)


def test_dhcp_exchanges_and_options(rows: list[dict[str, Any]]) -> None:
    dhcp = [r for r in rows if r["dhcp.option.dhcp"]]
    by_client: dict[str, list[str]] = defaultdict(list)
    for r in dhcp:
        client = r["eth.src"] if r["udp.srcport"] == "68" else r["eth.dst"]
        by_client[client].append(r["dhcp.option.dhcp"])
    for name, host in DEVICES.items():
        if name in ("gateway", "nvr-01"):
            assert host["mac"] not in by_client
            continue
        assert by_client[host["mac"]][:4] == ["1", "2", "3", "5"], name  # DISCOVER OFFER REQUEST ACK
        client_msgs = [r for r in dhcp if r["eth.src"] == host["mac"]]
        profile = samplegen._DHCP_PROFILES[name]
        for r in client_msgs:
            assert {"12", "55", "60"} <= set(_many(r["dhcp.option.type"]))
            assert r["dhcp.option.hostname"] == profile["hostname"]
            assert r["dhcp.option.vendor_class_id"] == profile["vendor_class"]
            assert [int(x) for x in _many(r["dhcp.option.request_list_item"])] == profile["prl"]
        mud = {r["dhcp.option.mudurl"] for r in client_msgs}
        assert mud == ({profile["mud_url"]} if name == "cam-dock" else {""}), name
    assert any(r["dhcp.option.vendor_class_id"] == "udhcp 1.20.2" for r in dhcp)


def test_dns_names_answers_and_ttls(rows: list[dict[str, Any]]) -> None:
    answers: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["dns.flags.response"] == "1" and r["dns.qry.type"] == "1":
            answers[r["dns.qry.name"]] |= set(_many(r["dns.a"]))
            assert all(int(t) > 0 for t in _many(r["dns.resp.ttl"]))
            assert r["ip.src"] == DEVICES["gateway"]["ip"]
    expected: dict[str, set[str]] = defaultdict(set)
    for h in REMOTES:
        if h["dns_name"]:
            expected[h["dns_name"]].add(h["ip"])
    assert answers == expected
    cname = {
        r["dns.cname"] for r in rows if r["dns.qry.name"] == "alarm.eu.s3.amazonaws.com" and r["dns.cname"]
    }
    assert cname == {"s3-r-w.eu-west-1.amazonaws.com"}
    aaaa = [r for r in rows if r["dns.qry.type"] == "28" and r["dns.flags.response"] == "1"]
    assert aaaa and all(r["dns.count.answers"] == "0" for r in aaaa)


def _outbound(rows: list[dict[str, Any]]) -> list[tuple[float, str, str, str]]:
    """(time, device, remote address, "proto/port") of packets from the VLAN to outside it."""
    out = []
    for r in rows:
        if not r["ip.dst"] or r["ip.src"] not in DEVICE_BY_IP:
            continue
        dst = ipaddress.ip_address(r["ip.dst"])
        if dst in LOCAL or dst.is_multicast or r["ip.dst"] == "255.255.255.255":
            continue
        proto, port = ("tcp", r["tcp.dstport"]) if r["tcp.dstport"] else ("udp", r["udp.dstport"])
        out.append((float(r["frame.time_epoch"]), DEVICE_BY_IP[r["ip.src"]], r["ip.dst"], f"{proto}/{port}"))
    return out


def test_internet_destinations_are_exactly_the_table(rows: list[dict[str, Any]]) -> None:
    seen = {(dev, ip, port) for _, dev, ip, port in _outbound(rows)}
    table = {(dev, h["ip"], port) for h in REMOTES for dev in h["contacted_by"] for port in h["ports"]}
    assert seen == table


def test_names_were_resolved_before_use_except_direct_ip(rows: list[dict[str, Any]]) -> None:
    answered: dict[tuple[str, str], float] = {}  # (device, address) -> first answer time
    for r in rows:
        if r["dns.flags.response"] == "1" and r["ip.dst"] in DEVICE_BY_IP:
            for a in _many(r["dns.a"]):
                answered.setdefault((DEVICE_BY_IP[r["ip.dst"]], a), float(r["frame.time_epoch"]))
    first: dict[tuple[str, str], float] = {}
    for t, dev, ip, _ in _outbound(rows):
        first.setdefault((dev, ip), t)
    for h in REMOTES:
        for dev in h["contacted_by"]:
            if h["dns_name"] is None:
                assert not any(a == h["ip"] for _, a in answered), h["name"]
            else:
                assert answered[(dev, h["ip"])] < first[(dev, h["ip"])], (dev, h["name"])
    direct = [h for h in REMOTES if h["expected"] == "direct-ip"]
    assert [h["name"] for h in direct] == ["xm-update-server"]  # exactly one direct-ip destination


def test_rtsp_then_rtp_from_every_camera(rows: list[dict[str, Any]]) -> None:
    methods = Counter(r["rtsp.method"] for r in rows if r["rtsp.method"])
    assert {"OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "TEARDOWN"} <= set(methods)
    assert methods["TEARDOWN"] == 1
    assert any(r["rtsp.status"] == "401" and r["ip.src"] == DEVICES["cam-entrance"]["ip"] for r in rows)
    nvr = DEVICES["nvr-01"]["ip"]
    rtp = [r for r in rows if r["rtp.ssrc"]]
    streams = {(r["ip.src"], r["rtp.ssrc"], r["rtp.p_type"]) for r in rtp}
    cams = {h["ip"] for h in DEVICES.values() if h["role"] == "camera"}
    assert {s[0] for s in streams} == cams
    assert all(r["ip.dst"] == nvr for r in rtp)
    assert Counter(s[2] for s in streams) == {"96": 7, "8": 2}  # video everywhere, audio on two
    announced = {
        m.group(1).lower() for r in rows for m in re.finditer(r"ssrc=([0-9A-F]{8})", r["rtsp.transport"])
    }
    assert announced == {int(s[1], 16).to_bytes(4, "big").hex() for s in streams}
    assert sum(1 for r in rows if "rtcp" in r["frame.protocols"]) > 100


def test_cs2_hellos_and_lan_announcement(rows: list[dict[str, Any]]) -> None:
    cam = DEVICES["cam-office"]["ip"]
    hellos = [r for r in rows if r["udp.dstport"] == "32100"]
    assert hellos and all(r["ip.src"] == cam and r["data.data"] == "f1000000" and r["udp.length"] == "12"
                          for r in hellos)  # fmt: skip
    per_server = Counter(r["ip.dst"] for r in hellos)
    cs2 = {h["ip"] for h in REMOTES if h["service"] == "cs2-p2p"}
    assert set(per_server) == cs2 and all(n % 15 == 0 for n in per_server.values())
    lan = [r for r in rows if r["udp.dstport"] == "32108"]
    assert lan and all(r["data.data"].startswith("f1310014" + b"TNPUSAF".hex()) for r in lan)


def test_cloud_payloads(rows: list[dict[str, Any]]) -> None:
    sni = {(r["ip.src"], r["ip.dst"], r["tls.handshake.extensions_server_name"]) for r in rows
           if r["tls.handshake.extensions_server_name"]}  # fmt: skip
    assert sni == {(DEVICES["cam-lobby"]["ip"], "52.218.48.10", "alarm.eu.s3.amazonaws.com")}
    uris = {r["http.request.uri"] for r in rows if r["http.request.uri"]}
    assert {"/list", "/dev/upload", "/ISAPI/System/deviceInfo"} <= uris
    assert any(u.startswith("/vipddns/upgengxin.asp?username=") and "userpwd=" in u for u in uris)
    easy4ip = [r for r in rows if r["udp.dstport"] == "8800"]
    assert easy4ip and bytes.fromhex(easy4ip[0]["data.data"]).startswith(b"DHGET /probe/p2psrv")
    assert all(bytes.fromhex(r["data.data"]).startswith(b"DHPOST /online/p2psrv/") for r in easy4ip[1:])
    mqtt = [r for r in rows if r["tcp.dstport"] == "31006" and r["data.data"]]
    connect = bytes.fromhex(mqtt[0]["data.data"])
    assert connect[0] == 0x10 and b"MQTT" in connect and connect.endswith(b"\x00\x04test")


def test_ipv6_icmp_and_arp(rows: list[dict[str, Any]]) -> None:
    v6 = [r for r in rows if r["ipv6.src"]]
    assert any(r["icmpv6.type"] == "134" and r["ipv6.src"].startswith("fe80::") for r in v6)  # router advert
    assert any(r["icmpv6.type"] == "135" and r["ipv6.src"] == "::" for r in v6)  # duplicate address detection
    ula_http = [r for r in v6 if r["tcp.dstport"] == "80" or r["tcp.srcport"] == "80"]
    pairs = {(r["ipv6.src"], r["ipv6.dst"]) for r in ula_http}
    assert pairs == {("fd00:10::100", "fd00:10::14"), ("fd00:10::14", "fd00:10::100")}
    pc = DEVICES["admin-pc"]["ip"]
    echo = Counter((r["ip.src"], r["icmp.type"]) for r in rows if r["icmp.type"])
    cams = [h["ip"] for h in DEVICES.values() if h["role"] == "camera"]
    assert echo[(pc, "8")] == 4 * len(cams) and all(echo[(c, "0")] == 4 for c in cams)
    arp = Counter(r["arp.opcode"] for r in rows if r["arp.opcode"])
    assert arp["1"] > 10 and arp["2"] > 10


def test_pyshark_dissects_vendor_banners_and_the_mud_url() -> None:
    """pyshark (the project's dissection oracle) sees the fingerprints analyzers will look for."""
    import pyshark

    wanted = "http.server || dhcp.option.mudurl || rtsp.status == 401"
    cap = pyshark.FileCapture(str(SAMPLE), display_filter=wanted, keep_packets=False)
    servers: dict[str, set[str]] = defaultdict(set)
    mud: set[str] = set()
    realms: set[str] = set()
    try:
        for pkt in cap:
            if "HTTP" in pkt:
                servers[pkt.ip.src].add(pkt.http.get_field_value("server"))
            if "DHCP" in pkt:
                mud.add(pkt.dhcp.get_field_value("option.mudurl"))
            if "RTSP" in pkt:
                found = re.search(r'WWW-Authenticate: Digest realm="([^"]+)"', str(pkt.rtsp))
                realms.add(found.group(1) if found else "")
    finally:
        cap.close()
    assert servers[DEVICES["cam-lobby"]["ip"]] == {"App-webs/"}
    assert servers[DEVICES["cam-parking"]["ip"]] == {"webserver"}
    assert servers[DEVICES["cam-gate"]["ip"]] == {"uc-httpd 1.0.0"}
    assert servers["120.92.92.241"] == {"nginx"}
    assert mud == {samplegen._DHCP_PROFILES["cam-dock"]["mud_url"]}
    assert realms == {"Login to 7K0A2C3PAZ4F1B9"}


# -- the host table ---------------------------------------------------------------------------------------


def test_countries_are_geoip2fast_s() -> None:
    from geoip2fast import GeoIP2Fast

    geo = GeoIP2Fast()
    for h in REMOTES:
        code = geo.lookup(h["ip"]).country_code
        assert (None if code in ("--", "") else code) == h["country"], h["name"]


def test_device_ouis_belong_to_their_vendors() -> None:
    """Wireshark's manuf file is an independent registry of the OUIs."""
    manuf = Path("/usr/share/wireshark/manuf")
    if not manuf.exists():
        pytest.skip("Wireshark manuf file not installed")
    registry = {}
    for line in manuf.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and len(parts[0]) == 8:
            registry[parts[0].lower()] = parts[2]
    expected = {"Hikvision": "Hikvision", "Dahua": "Dahua", "Uniview": "Uniview", "Ubiquiti": "Ubiquiti",
                "Intel": "Intel", "Xiongmai": "Koenig & Bauer", "generic": "Bilian"}  # fmt: skip
    for name, h in DEVICES.items():
        assert expected[h["vendor"]] in registry[h["mac"][:8]], name


def test_docstring_tables_match_sample_hosts() -> None:
    doc = samplegen.__doc__ or ""
    devices = {}
    remotes: dict[str, list[str]] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(cells[0]) <= {"-"} or cells[0] in ("device", "destination"):
            continue
        if len(cells) == 5:
            devices[cells[0]] = cells
        elif len(cells) == 6:
            remotes[cells[0].replace(" (no DNS)", "")] = cells
    assert set(devices) == set(DEVICES)
    for name, (_, addr, mac, vendor, expected) in devices.items():
        h = DEVICES[name]
        assert addr.split(", ")[0] == h["ip"] and mac == h["mac"] and vendor == h["vendor"], name
        assert expected == h["expected"], name
        if h["ipv6"] and not h["ipv6"].startswith("fe80"):
            assert addr.split(", ")[1] == h["ipv6"]
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in REMOTES:
        by_name[h["name"]].append(h)
    assert set(remotes) == set(by_name)
    for name, (_, addr, cc, port, first, expected) in remotes.items():
        hosts = by_name[name]
        assert addr.split(", ") == [h["ip"] for h in hosts], name
        assert cc == (hosts[0]["country"] or "--") and [port] == hosts[0]["ports"], name
        assert first == hosts[0]["contacted_by"][0] and expected == hosts[0]["expected"], name


def test_every_device_verdict_is_its_worst_destination() -> None:
    rank = {"allowed": 0, "vendor-cloud": 1, "unexpected": 2, "direct-ip": 2}
    for name, h in DEVICES.items():
        verdicts = [r["expected"] for r in REMOTES if name in r["contacted_by"]] or ["allowed"]
        worst = max(verdicts, key=lambda v: rank[v])
        assert rank[h["expected"]] == rank[worst], name


def test_default_seed_constant() -> None:
    assert DEFAULT_SEED == 1 and DEFAULT_PACKETS == 2500
