"""Deterministic scenario captures for firmware update channels (tests, demos, docs).

Each scenario function returns a list of (timestamp, Ethernet frame); `write(path, frames)` saves
them with agent.capture.writer.PcapWriter. Frames are built with dpkt, with fixed addresses, ports,
sequence numbers and timestamps, so the same call always gives the same bytes. The small firmware
images are real containers (uImage with correct CRCs around a gzip'd cpio, a Dahua DH zip with an
Install file); `bad=True` adds an init script that launches telnetd.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import socket
import struct
import zipfile
import zlib
from pathlib import Path

import dpkt

from agent.capture.writer import PcapWriter

Frames = list[tuple[float, bytes]]
T0 = 1_717_200_000.0
MSS = 1400

ADMIN = ("192.168.1.10", "3c:52:82:00:00:10")  # admin workstation / NVR
HIK_CAM = ("192.168.1.64", "c0:56:e3:00:00:64")  # Hikvision OUI
DAHUA_CAM = ("192.168.1.108", "3c:ef:8c:00:01:08")  # Dahua OUI
XM_CAM = ("192.168.1.70", "00:12:14:00:00:70")  # Xiongmai OUI
GATEWAY_MAC = "00:00:5e:00:01:01"
RESOLVER = ("192.168.1.1", GATEWAY_MAC)
UPGRADE_HOST = "usdownload.ezvizlife.com"
UPGRADE_IP = "203.0.113.50"
ROGUE_IP = "203.0.113.66"


# -- firmware images ------------------------------------------------------------------------------
def cpio_newc(files: dict[str, bytes]) -> bytes:
    """A cpio "newc" archive (what initramfs images use) with fixed metadata."""
    out = io.BytesIO()
    ino = 1
    for name, data in [*sorted(files.items()), ("TRAILER!!!", b"")]:
        mode = 0o100755 if name != "TRAILER!!!" else 0
        raw = name.encode() + b"\0"
        head = b"070701" + b"".join(
            f"{v:08x}".encode() for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        )
        out.write(head + raw)
        out.write(b"\0" * (-(len(head) + len(raw)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
        ino += 1
    return out.getvalue()


def rootfs_files(bad: bool) -> dict[str, bytes]:
    rcs = b"#!/bin/sh\nmount -t proc proc /proc\n/usr/bin/camera_app &\n"
    if bad:
        rcs += b"/usr/sbin/telnetd -l /bin/sh &\n"
    blob = random.Random(1520).randbytes(24_000)  # an incompressible stand-in for a binary
    return {
        "usr/bin/camera_app": b"\x7fELF\x01\x01\x01" + blob,
        "etc/init.d/rcS": rcs,
        "etc/version": b"V5.5.0 build 200101\n",
        "usr/share/readme.txt": b"camwatch scenario image\n" * 64,
    }


def uimage(payload: bytes, name: str = "camwatch scenario", image_type: int = 3, comp: int = 1) -> bytes:
    """Legacy U-Boot image: 64-byte big-endian header with header and data CRC32s."""
    fields = (0x27051956, 0, 1_577_836_800, len(payload), 0x80008000, 0x80008000, zlib.crc32(payload))
    tail = struct.pack(">BBBB32s", 5, 2, image_type, comp, name.encode()[:32])
    header = struct.pack(">IIIIIII", *fields) + tail
    hcrc = zlib.crc32(header)
    return header[:4] + struct.pack(">I", hcrc) + header[8:] + payload


def firmware_uimage(bad: bool = False) -> bytes:
    """A uImage whose payload is a gzip'd cpio root filesystem."""
    return uimage(gzip.compress(cpio_newc(rootfs_files(bad)), mtime=0))


def dahua_zip(bad: bool = False) -> bytes:
    """A Dahua update package: a ZIP with Install and a romfs image, first magic PK -> DH."""
    install = {"Commands": ["burn romfs-x.cramfs.img romfs"], "Vendor": "General", "Version": "2.800"}
    members = {
        "Install": (json.dumps(install, indent=1) + "\n").encode(),
        "romfs-x.cramfs.img": firmware_uimage(bad),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    package = bytearray(buf.getvalue())
    package[:2] = b"DH"
    return bytes(package)


def plain_zip() -> bytes:
    """An ordinary ZIP (documentation), not firmware: a negative case."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("manual.txt", date_time=(2020, 1, 1, 0, 0, 0))
        zf.writestr(info, b"camera manual\n" * 4000)
    return buf.getvalue()


# -- frames -----------------------------------------------------------------------------------------
def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ether(src_mac: str, dst_mac: str, ip: dpkt.ip.IP) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=_mac(src_mac), dst=_mac(dst_mac), type=0x0800, data=ip))


def ip4(src: str, dst: str, proto: int, l4: dpkt.Packet, ident: int = 1) -> dpkt.ip.IP:
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, id=ident & 0xFFFF)
    ip.data = l4
    ip.len = 20 + len(bytes(l4))
    return ip


class Scenario:
    """Collects frames on a fixed clock; TCP sessions with deterministic sequence numbers."""

    def __init__(self, t0: float = T0) -> None:
        self.t = t0
        self.frames: Frames = []
        self.ident = 1
        self.isn = 1000

    def _emit(self, src: tuple[str, str], dst: tuple[str, str], proto: int, l4: dpkt.Packet) -> None:
        self.ident += 1
        self.t += 0.001
        self.frames.append(
            (round(self.t, 6), ether(src[1], dst[1], ip4(src[0], dst[0], proto, l4, self.ident)))
        )

    def udp(self, src: tuple[str, str], sport: int, dst: tuple[str, str], dport: int, payload: bytes) -> None:
        u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
        u.ulen = 8 + len(payload)
        self._emit(src, dst, 17, u)

    def dns_answer(self, client: tuple[str, str], name: str, address: str) -> None:
        q = dpkt.dns.DNS(id=0x1234, qd=[dpkt.dns.DNS.Q(name=name, type=1, cls=1)])
        self.udp(client, 40000, RESOLVER, 53, bytes(q))
        rr = dpkt.dns.DNS.RR(name=name, type=1, cls=1, ttl=3600, ip=socket.inet_aton(address))
        a = dpkt.dns.DNS(id=0x1234, op=dpkt.dns.DNS_RA, qd=q.qd, an=[rr])
        a.qr = dpkt.dns.DNS_R
        self.udp(RESOLVER, 53, client, 40000, bytes(a))

    def tcp_session(
        self,
        client: tuple[str, str],
        cport: int,
        server: tuple[str, str],
        sport: int,
        exchanges: list[tuple[bool, bytes]],
        *,
        drop: frozenset[int] = frozenset(),
    ) -> None:
        """Handshake, then each (from_client, bytes) cut into MSS segments (segment numbers in
        `drop` are left out of the capture: lost on the monitoring port), then FIN both ways."""
        self.isn += 100_000
        cseq, sseq = self.isn, self.isn + 50_000
        self._tcp(client, cport, server, sport, cseq, 0, dpkt.tcp.TH_SYN)
        self._tcp(server, sport, client, cport, sseq, cseq + 1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        cseq += 1
        sseq += 1
        self._tcp(client, cport, server, sport, cseq, sseq, dpkt.tcp.TH_ACK)
        n = 0
        for from_client, data in exchanges:
            for off in range(0, len(data), MSS):
                chunk = data[off : off + MSS]
                n += 1
                if from_client:
                    if n not in drop:
                        self._tcp(client, cport, server, sport, cseq, sseq, dpkt.tcp.TH_ACK | 0x08, chunk)
                    cseq += len(chunk)
                else:
                    if n not in drop:
                        self._tcp(server, sport, client, cport, sseq, cseq, dpkt.tcp.TH_ACK | 0x08, chunk)
                    sseq += len(chunk)
        fin = dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK
        self._tcp(client, cport, server, sport, cseq, sseq, fin)
        self._tcp(server, sport, client, cport, sseq, cseq + 1, fin)
        self._tcp(client, cport, server, sport, cseq + 1, sseq + 1, dpkt.tcp.TH_ACK)

    def _tcp(
        self,
        src: tuple[str, str],
        sport: int,
        dst: tuple[str, str],
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        data: bytes = b"",
    ) -> None:
        t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags)
        t.win = 65535
        t.data = data
        self._emit(src, dst, 6, t)


def http_request(method: str, uri: str, host: str, body: bytes = b"", ctype: str | None = None) -> bytes:
    head = f"{method} {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: camwatch-scenario\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def http_response(status: str, body: bytes = b"", ctype: str = "application/octet-stream") -> bytes:
    head = f"HTTP/1.1 {status}\r\nServer: scenario\r\nContent-Type: {ctype}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def http_chunked_response(body: bytes, chunk: int = 4000) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    for off in range(0, len(body), chunk):
        part = body[off : off + chunk]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def multipart(
    field: str, filename: str, data: bytes, boundary: str = "----camwatchBoundary7MA4YWxk"
) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


# -- scenarios --------------------------------------------------------------------------------------
def hik_online_upgrade(bad: bool = False) -> Frames:
    """An admin tells a Hikvision camera to upgrade online (ISAPI), the camera resolves the upgrade
    host and pulls digicap.dav over HTTP (chunked)."""
    s = Scenario()
    cmd = b"<onlineUpgradeParameter><downloadPackage>true</downloadPackage></onlineUpgradeParameter>"
    s.tcp_session(
        ADMIN,
        51000,
        HIK_CAM,
        80,
        [
            (
                True,
                http_request(
                    "PUT", "/ISAPI/System/onlineUpgrade/downloadPackage", HIK_CAM[0], cmd, "application/xml"
                ),
            ),
            (False, http_response("200 OK", b"<ResponseStatus/>", "application/xml")),
        ],
    )
    s.dns_answer(HIK_CAM, UPGRADE_HOST, UPGRADE_IP)
    s.tcp_session(
        HIK_CAM,
        52000,
        (UPGRADE_IP, GATEWAY_MAC),
        80,
        [
            (True, http_request("GET", "/device/DS-2CD2042WD/2.0/digicap.dav", UPGRADE_HOST)),
            (False, http_chunked_response(firmware_uimage(bad))),
        ],
    )
    return s.frames


def isapi_push(bad: bool = True, source: tuple[str, str] = ADMIN) -> Frames:
    """A host PUTs an image to /ISAPI/System/updateFirmware on a Hikvision camera."""
    s = Scenario()
    image = firmware_uimage(bad)
    s.tcp_session(
        source,
        51100,
        HIK_CAM,
        80,
        [
            (
                True,
                http_request(
                    "PUT", "/ISAPI/System/updateFirmware", HIK_CAM[0], image, "application/octet-stream"
                ),
            ),
            (
                False,
                http_response(
                    "200 OK",
                    b"<ResponseStatus><statusCode>1</statusCode></ResponseStatus>",
                    "application/xml",
                ),
            ),
        ],
    )
    return s.frames


def dahua_upgrade_cgi(bad: bool = False) -> Frames:
    """A host POSTs a DH zip to a Dahua camera's /cgi-bin/upgrade.cgi (multipart/form-data)."""
    s = Scenario()
    body = multipart("file", "DH_IPC-HX2XXX_update.bin", dahua_zip(bad))
    ctype = "multipart/form-data; boundary=----camwatchBoundary7MA4YWxk"
    s.tcp_session(
        ADMIN,
        51200,
        DAHUA_CAM,
        80,
        [
            (True, http_request("POST", "/cgi-bin/upgrade.cgi", DAHUA_CAM[0], body, ctype)),
            (False, http_response("200 OK", b"OK\r\n", "text/plain")),
        ],
    )
    return s.frames


def tftp_uimage(bad: bool = False, block: int = 512) -> Frames:
    """U-Boot recovery: the camera reads uImage from a TFTP server (reply from a new port)."""
    s = Scenario()
    cam = ("192.0.0.64", HIK_CAM[1])
    server = ("192.0.0.128", ADMIN[1])
    image = firmware_uimage(bad)
    s.udp(cam, 2070, server, 69, b"\x00\x01uImage\x00octet\x00")
    n = 0
    for n, off in enumerate(range(0, len(image) + 1, block), start=1):
        s.udp(server, 50000, cam, 2070, struct.pack("!HH", 3, n & 0xFFFF) + image[off : off + block])
        s.udp(cam, 2070, server, 50000, struct.pack("!HH", 4, n & 0xFFFF))
    return s.frames


def ftp_retr(bad: bool = False) -> Frames:
    """A Xiongmai camera logs in to an FTP server and RETRieves firmware.bin (passive mode)."""
    s = Scenario()
    server = ("192.168.1.5", "3c:52:82:00:00:05")
    image = firmware_uimage(bad)
    control = [
        (False, b"220 ftp ready\r\n"),
        (True, b"USER camera\r\n"),
        (False, b"331 password please\r\n"),
        (True, b"PASS camera\r\n"),
        (False, b"230 logged in\r\n"),
        (True, b"TYPE I\r\n"),
        (False, b"200 binary\r\n"),
        (True, b"PASV\r\n"),
        (False, b"227 Entering Passive Mode (192,168,1,5,156,64)\r\n"),
        (True, b"RETR firmware.bin\r\n"),
        (False, f"150 Opening BINARY connection for firmware.bin ({len(image)} bytes)\r\n".encode()),
    ]
    s.tcp_session(XM_CAM, 53000, server, 21, control)
    s.tcp_session(XM_CAM, 53001, server, 40000, [(False, image)])
    return s.frames


def xmeye_version_check() -> Frames:
    """A Xiongmai camera asks the XMeye update server for a newer version (cleartext POST /list)."""
    s = Scenario()
    body = json.dumps(
        {
            "UUID": "a1b2c3d4e5f60708",
            "DevID": "XM530_50H20",
            "DevType": "IPC",
            "CurVersion": "2019-05-29",
            "Expect": "Latest",
        }
    ).encode()
    s.tcp_session(
        XM_CAM,
        54000,
        ("120.92.92.241", GATEWAY_MAC),
        80,
        [
            (True, http_request("POST", "/list", "120.92.92.241", body, "application/json")),
            (False, b"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n"),
        ],
    )
    return s.frames


def incomplete_download() -> Frames:
    """A camera pulls digicap.dav from an unknown host; segments 3-4 never reach the monitor port."""
    s = Scenario()
    s.tcp_session(
        HIK_CAM,
        55000,
        (ROGUE_IP, GATEWAY_MAC),
        80,
        [
            (True, http_request("GET", "/fw/digicap.dav", ROGUE_IP)),
            (False, http_response("200 OK", firmware_uimage(False) + bytes(4000))),
        ],
        drop=frozenset({3, 4}),
    )
    return s.frames


def dvrip_push(bad: bool = False) -> Frames:
    """A host upgrades a Xiongmai camera over DVRIP: login, 1520 start, 1522 data blocks."""
    s = Scenario()
    image = firmware_uimage(bad)

    def msg(msg_id: int, body: bytes, seq: int) -> bytes:
        return struct.pack("<BB2xII2xHI", 0xFF, 0, 0x1234, seq, msg_id, len(body)) + body

    stream = msg(
        1000, b'{"EncryptType":"MD5","LoginType":"DVRIP-Web","PassWord":"tlJwpbo6","UserName":"admin"}\n\0', 0
    )
    stream += msg(1520, b'{"Action":"Start","Type":"System"}\n\0', 1)
    seq = 2
    for off in range(0, len(image), 8192):
        stream += msg(1522, image[off : off + 8192], seq)
        seq += 1
    s.tcp_session(ADMIN, 56000, XM_CAM, 34567, [(True, stream)])
    return s.frames


def tls_upgrade_host() -> Frames:
    """A camera opens TLS to the XMeye upgrade server (the SNI is the only visible fact)."""
    s = Scenario()
    s.tcp_session(
        XM_CAM, 57000, ("203.0.113.77", GATEWAY_MAC), 443, [(True, client_hello("upgrade.secu100.net"))]
    )
    return s.frames


def client_hello(name: str) -> bytes:
    sni = name.encode()
    ext = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + struct.pack("!H", len(ext))
        + ext
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def ordinary_downloads() -> Frames:
    """Negatives: a web page, a JPEG snapshot, a documentation zip, an ISAPI config PUT."""
    s = Scenario()
    server = ("203.0.113.90", GATEWAY_MAC)
    jpeg = b"\xff\xd8\xff\xe0" + bytes(30_000)
    s.tcp_session(
        HIK_CAM,
        58000,
        server,
        80,
        [
            (True, http_request("GET", "/index.html", "example.net")),
            (False, http_response("200 OK", b"<html>" + b"x" * 5000 + b"</html>", "text/html")),
            (True, http_request("GET", "/snap.jpg", "example.net")),
            (False, http_response("200 OK", jpeg, "image/jpeg")),
            (True, http_request("GET", "/docs/manual.zip", "example.net")),
            (False, http_response("200 OK", plain_zip(), "application/zip")),
        ],
    )
    s.tcp_session(
        ADMIN,
        58001,
        HIK_CAM,
        80,
        [
            (
                True,
                http_request(
                    "PUT",
                    "/ISAPI/System/time",
                    HIK_CAM[0],
                    b"<Time><timeMode>NTP</timeMode></Time>",
                    "application/xml",
                ),
            ),
            (False, http_response("200 OK", b"<ResponseStatus/>", "application/xml")),
        ],
    )
    return s.frames


SCENARIOS = {
    "hik_online_upgrade": hik_online_upgrade,
    "isapi_push": isapi_push,
    "dahua_upgrade_cgi": dahua_upgrade_cgi,
    "tftp_uimage": tftp_uimage,
    "ftp_retr": ftp_retr,
    "xmeye_version_check": xmeye_version_check,
    "incomplete_download": incomplete_download,
    "dvrip_push": dvrip_push,
    "tls_upgrade_host": tls_upgrade_host,
    "ordinary_downloads": ordinary_downloads,
}


def write(path: str | Path, frames: Frames) -> Path:
    with PcapWriter(path) as w:
        for ts, frame in frames:
            w.write(ts, frame)
    return Path(path)
