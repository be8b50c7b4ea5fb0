"""The capture reader against Wireshark: tshark fields and pyshark raw frames are the oracle.

Every corpus capture (and gzip / nanosecond / pcapng / multi-link-type variants made with
Wireshark's own editcap and mergecap, plus hand-built odd pcapng files) must give the same
records as tshark: count, time stamps to the microsecond, captured and original lengths,
interface and link type. pyshark supplies the raw frame bytes for a byte-exact comparison.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.capture import writer as w
from agent.capture.pcapfile import CaptureReader
from tests.conftest import CORPUS, corpus_path, require_tool

# pcap LINKTYPE_* -> Wireshark's frame.encap_type (WTAP_ENCAP_*) and first dissector (pyshark layer)
LINKTYPE_TO_WTAP = {0: 15, 1: 1, 101: 7, 113: 25, 228: 129, 229: 130, 276: 210}
LINKTYPE_TO_LAYER = {0: "null", 1: "eth", 101: "raw", 113: "sll", 228: "ip", 229: "ipv6", 276: "sll"}

CORPUS_FILES = sorted(p.name for p in (CORPUS / "pcaps").glob("*")) if (CORPUS / "pcaps").is_dir() else []
# pyshark dissects in a tshark subprocess and parses JSON: keep it to the smaller files.
PYSHARK_MAX_PACKETS = 200


def tshark_records(path: Path) -> list[tuple[str, int, int, tuple[int, int], int]]:
    """(time_epoch text, cap_len, len, (section, interface_id), encap_type) per frame, as tshark
    reads them (section numbers from 0; tshark leaves both empty for pcap files)."""
    tshark = require_tool("tshark")
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.len",
            "-e",
            "frame.section_number",
            "-e",
            "frame.interface_id",
            "-e",
            "frame.encap_type",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rows = []
    for line in out.splitlines():
        t, cap, length, section, iface, encap = line.split("\t")
        rows.append((t, int(cap), int(length), (int(section or 1) - 1, int(iface or 0)), int(encap)))
    return rows


def reader_records(path: Path) -> list[tuple[float, int, int, tuple[int, int], int]]:
    with CaptureReader(path) as reader:
        out: list[tuple[float, int, int, tuple[int, int], int]] = []
        for b in reader.batches():
            iface = reader.interfaces[b.interface]
            assert iface["linktype"] == b.linktype
            out.extend(
                (b.ts[i], b.caplens[i], b.origlens[i], (iface["section"], iface["id"]), b.linktype)
                for i in range(len(b))
            )
        return out


def assert_same_as_tshark(path: Path) -> int:
    expected = tshark_records(path)
    got = reader_records(path)
    assert len(got) == len(expected), f"{path.name}: {len(got)} records, tshark has {len(expected)}"
    for n, (mine, theirs) in enumerate(zip(got, expected, strict=True), start=1):
        ts, cap, length, iface, linktype = mine
        t_text, t_cap, t_len, t_iface, t_encap = theirs
        where = f"{path.name} frame {n}"
        if t_text:  # empty for simple packet blocks, which carry no time stamp
            assert abs(ts - float(t_text)) < 1e-6, f"{where}: {ts!r} != {t_text}"
        assert (cap, length) == (t_cap, t_len), where
        assert iface == t_iface, where
        assert LINKTYPE_TO_WTAP.get(linktype) == t_encap, f"{where}: link type {linktype}, encap {t_encap}"
    return len(got)


def assert_same_frames_as_pyshark(path: Path) -> None:
    import pyshark

    with CaptureReader(path) as reader:
        mine = [(b.frame(i), b.linktype) for b in reader.batches() for i in range(len(b))]
    cap = pyshark.FileCapture(str(path), use_json=True, include_raw=True, keep_packets=False)
    try:
        theirs = [(pkt.get_raw_packet(), pkt.layers[0].layer_name) for pkt in cap]
    finally:
        cap.close()
    assert len(mine) == len(theirs)
    for n, ((frame, linktype), (raw, layer)) in enumerate(zip(mine, theirs, strict=True), start=1):
        assert frame == raw, f"{path.name} frame {n}: bytes differ"
        assert LINKTYPE_TO_LAYER[linktype] == layer, f"{path.name} frame {n}"


@pytest.mark.parametrize("name", CORPUS_FILES or ["<corpus absent>"])
def test_corpus_file_matches_tshark(name: str) -> None:
    path = corpus_path("pcaps", name)
    assert assert_same_as_tshark(path) > 0


@pytest.mark.parametrize("name", CORPUS_FILES or ["<corpus absent>"])
def test_corpus_file_frames_match_pyshark(name: str) -> None:
    path = corpus_path("pcaps", name)
    if len(reader_records(path)) > PYSHARK_MAX_PACKETS:
        pytest.skip("large file: checked against tshark fields only")
    assert_same_frames_as_pyshark(path)


@pytest.mark.parametrize(
    "name", ["mudproject_yi_camera.pcap", "2ic80_dahua_web.pcapng", "zeek_vlan-pcp-dei.pcapng"]
)
def test_gzip_copy_matches_tshark(tmp_path: Path, name: str) -> None:
    src = corpus_path("pcaps", name)
    gz = tmp_path / (name + ".gz")
    gz.write_bytes(gzip.compress(src.read_bytes(), compresslevel=6, mtime=0))
    assert reader_records(gz) == reader_records(src)
    assert_same_as_tshark(gz)


@pytest.mark.parametrize(
    ("name", "editcap_args"),
    [
        ("mudproject_yi_camera.pcap", ["-F", "nsecpcap"]),
        ("zeek_wikipedia.pcap", ["-F", "pcapng"]),
        ("2ic80_dahua_rtsp.pcapng", ["-F", "pcap"]),
        ("2ic80_dahua_rtsp.pcapng", ["-F", "nsecpcap", "-s", "128"]),  # snap length 128
        ("zeek_http-qinq-0.pcap", ["-F", "modpcap"]),
    ],
)
def test_editcap_variants_match_tshark(tmp_path: Path, name: str, editcap_args: list[str]) -> None:
    editcap = require_tool("editcap")
    src = corpus_path("pcaps", name)
    out = tmp_path / "variant"
    subprocess.run([editcap, *editcap_args, str(src), str(out)], check=True, capture_output=True, timeout=120)
    n = assert_same_as_tshark(out)
    assert n == len(reader_records(src))


def test_mergecap_of_different_link_types_matches_tshark(tmp_path: Path) -> None:
    """mergecap writes one IDB per input link type, interleaving packets by time."""
    mergecap = require_tool("mergecap")
    editcap = require_tool("editcap")
    eth = corpus_path("pcaps", "zeek_dhcp.pcap")
    raw = tmp_path / "raw.pcap"
    # strip the 14-byte Ethernet header and relabel as raw IP: a second, different link type
    subprocess.run(
        [editcap, "-C", "14", "-T", "rawip", str(corpus_path("pcaps", "zeek_ntp.pcap")), str(raw)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    merged = tmp_path / "merged.pcapng"
    subprocess.run(
        [mergecap, "-F", "pcapng", "-w", str(merged), str(eth), str(raw)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with CaptureReader(merged) as reader:
        batches = list(reader.batches())
        assert sorted({i["linktype"] for i in reader.interfaces}) == [1, 101]
    assert {b.linktype for b in batches} == {1, 101}
    assert assert_same_as_tshark(merged) == 9 + 32
    assert_same_frames_as_pyshark(merged)


def _odd_pcapng(order: str, *, with_spb: bool = True) -> bytes:
    """Valid but unusual pcapng: two sections, odd resolutions and offsets, SPB/PB, extra blocks."""
    eth = bytes.fromhex(
        "ffffffffffff00112233445508060001080006040001001122334455c0a80a0b000000000000c0a80a01"
    )
    eth += bytes(60 - len(eth))
    ip = bytes.fromhex("4500001c00010000401100000a0000010a0000020035003500080000")
    base = 1_700_000_000
    blob = w.pcapng_shb(order)
    blob += w.pcapng_idb(1, 0, order, name="cam0", tsresol=0x8A)  # 2^-10 s units
    blob += w.pcapng_idb(101, 0, order, name="tun0", tsresol=3, tsoffset=base)  # ms since the offset
    blob += w.pcapng_nrb([(b"\xc0\xa8\x0a\x01", "gw")], order)
    blob += w.pcapng_epb(0, base * 1024 + 512, eth, order, comment="hello")
    blob += w.pcapng_epb(1, 1500, ip, order)
    blob += w.pcapng_isb(0, base * 1024, order)
    blob += w.pcapng_pb(0, base * 1024 + 700, eth, order, drops=1)
    blob += w.pcapng_shb(order)
    blob += w.pcapng_idb(1, 48, order, name="span", tsresol=9)
    blob += w.pcapng_epb(0, (base + 5) * 10**9 + 123_456_789, eth[:48], order, origlen=len(eth))
    if with_spb:
        blob += w.pcapng_spb(eth[:48], order, origlen=len(eth))
    # (no custom block here: tshark lists those as frames of their own; the unit tests cover them)
    blob += w.pcapng_epb(0, (base + 6) * 10**9, eth, order)
    return blob


@pytest.mark.parametrize("order", ["<", ">"])
def test_hand_built_odd_pcapng_matches_tshark_and_pyshark(tmp_path: Path, order: str) -> None:
    path = tmp_path / f"odd-{'le' if order == '<' else 'be'}.pcapng"
    path.write_bytes(_odd_pcapng(order))
    assert assert_same_as_tshark(path) == 6
    # pyshark cannot build a packet without a time stamp, which is what a simple packet block is
    no_spb = tmp_path / "odd-no-spb.pcapng"
    no_spb.write_bytes(_odd_pcapng(order, with_spb=False))
    assert_same_frames_as_pyshark(no_spb)
    with CaptureReader(path) as reader:
        list(reader.batches())
        summary: list[tuple[Any, ...]] = [
            (i["name"], i["linktype"], i["tsresol"], i["section"], i["id"]) for i in reader.interfaces
        ]
    assert summary == [("cam0", 1, 1024, 0, 0), ("tun0", 101, 1000, 0, 1), ("span", 1, 10**9, 1, 0)]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_hand_built_pcap_byte_orders_match_tshark(tmp_path: Path, order: str, nano: bool) -> None:
    src = corpus_path("pcaps", "dpkt_dns_icmp.pcap")
    path = tmp_path / "variant.pcap"
    with CaptureReader(src) as reader, w.PcapWriter(path, nanosecond=nano, byte_order=order) as out:
        for b in reader.batches():
            for i in range(len(b)):
                out.write(b.ts[i] + (0.000000789 if nano else 0), b.frame(i))
    assert assert_same_as_tshark(path) == 32


def test_tshark_is_the_one_we_expect() -> None:
    tshark = require_tool("tshark")
    assert shutil.which("editcap") and shutil.which("mergecap")
    version = subprocess.run([tshark, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("TShark (Wireshark) ")


def test_bundled_sample_and_its_pcapng_copy_match_tshark(tmp_path: Path) -> None:
    from agent.samplegen import DEFAULT_OUT, DEFAULT_PACKETS

    assert assert_same_as_tshark(DEFAULT_OUT) == DEFAULT_PACKETS
    ng = tmp_path / "sample.pcapng"
    subprocess.run(
        [require_tool("editcap"), "-F", "pcapng", str(DEFAULT_OUT), str(ng)], check=True, timeout=60
    )
    assert assert_same_as_tshark(ng) == DEFAULT_PACKETS
    assert [r[:3] for r in reader_records(ng)] == [r[:3] for r in reader_records(DEFAULT_OUT)]
