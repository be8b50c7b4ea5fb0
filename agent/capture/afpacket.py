"""Live capture from one network interface: an AF_PACKET socket with a TPACKET_V3 mmap ring.

The kernel writes packets into a ring of fixed-size blocks shared with this process (packet(7),
Documentation/networking/packet_mmap.rst). A block is handed over when it is full or when the
block timeout expires, so one `poll()` wake-up delivers many packets with no system call per packet.
Each ready block is copied out of the ring in one slice (one `bytes` object), given back to the kernel
at once, and turned into one `RecordBatch` whose offsets point at the frames inside that copy, exactly
like a chunk of a capture file: the pipeline cannot tell the difference.

Details that matter:

* VLAN offload: the kernel strips the outer 802.1Q/802.1ad tag of received frames and reports it in
  the packet header (`tp_vlan_tci`, `tp_vlan_tpid`, `TP_STATUS_VLAN_VALID`). Blocks with such frames
  are rebuilt with the tag re-inserted after the MAC addresses, so the pipeline sees the frame as it
  was on the wire (same as libpcap does for tcpdump).
* Promiscuous mode is requested with PACKET_ADD_MEMBERSHIP/PACKET_MR_PROMISC: it lasts exactly as long
  as the socket and needs only CAP_NET_RAW (no CAP_NET_ADMIN, no interface flag left behind).
* The optional capture filter is compiled by `tcpdump -ddd -i IFACE` (libpcap generates the right code
  for the live interface, including the VLAN-offload aware `vlan` primitive) and attached with
  SO_ATTACH_FILTER *before* the socket is bound, so no unfiltered packet ever reaches the ring.
* `stats()` reads PACKET_STATISTICS; the kernel resets the counters on every read, so it returns the
  increments since the last call and the caller accumulates them. For TPACKET_V3 `tp_packets` includes
  the dropped packets.
* `fanout=(group, mode)` joins a PACKET_FANOUT group (hash mode keeps both directions of a flow on one
  socket), for running several capture processes on one interface.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import shutil
import socket
import struct
import subprocess

from agent.capture.pcapfile import RecordBatch
from agent.errors import UsageError

__all__ = ["AfPacketSource", "CaptureSetupError", "compile_filter", "permission_hint"]

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

# ARPHRD_* -> pcap LINKTYPE_*
_LINKTYPES = {1: 1, 772: 1, 0xFFFE: 101}  # Ethernet, loopback (Ethernet header), none (raw IP)
LINKTYPE_ETHERNET = 1

# struct tpacket_req3
_REQ3 = struct.Struct("=7I")
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status, num_pkts,
# offset_to_first_pkt, blk_len
_BLOCK_STATUS = struct.Struct("=I")
_BLOCK_HDR = struct.Struct("=III")  # num_pkts, offset_to_first_pkt, blk_len (at byte 12)
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net,
# hv1 {rxhash, vlan_tci, vlan_tpid}
_PKT_HDR = struct.Struct("=IIIIIIHHIIH")
_STATS3 = struct.Struct("=III")  # struct tpacket_stats_v3
_MREQ = struct.Struct("=iHH8s")  # struct packet_mreq
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter
_SOCK_FPROG = struct.Struct("@HP")  # struct sock_fprog (native alignment: the pointer is 8-aligned)
_VLAN_TAG = struct.Struct("!HH")

DEFAULT_BLOCK_SIZE = 1 << 20  # 1 MiB blocks: a power-of-two number of pages, room for 64 KiB GRO frames
DEFAULT_RING_MB = 32
DEFAULT_BLOCK_TIMEOUT_MS = 50  # a partly filled block is handed over after this long
FRAME_SIZE = 2048  # TPACKET_V3 frames are variable; the kernel only checks the arithmetic


class CaptureSetupError(UsageError):
    """The capture cannot start (missing interface, no permission, bad filter): exit code 2."""


def permission_hint() -> str:
    return (
        "permission denied: capturing needs CAP_NET_RAW (run as root, under systemd with "
        "AmbientCapabilities=CAP_NET_RAW, or grant it with setcap cap_net_raw+ep; see docs/live-capture.md)"
    )


def compile_filter(expr: str, interface: str) -> list[tuple[int, int, int, int]]:
    """cBPF instructions for a capture filter on `interface`, compiled by `tcpdump -ddd`."""
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/sbin")
    if tcpdump is None:
        raise CaptureSetupError(f"capture filter {expr!r}: tcpdump is needed to compile it and was not found")
    try:
        proc = subprocess.run(
            [tcpdump, "-ddd", "-i", interface, "--", expr],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureSetupError(f"capture filter {expr!r}: cannot run tcpdump: {exc}") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "warning" not in ln.lower()]
        why = lines[-1].removeprefix("tcpdump: ") if lines else f"tcpdump exited with {proc.returncode}"
        if "permission" in why.lower() or "not permitted" in why.lower():
            raise CaptureSetupError(f"{interface}: {permission_hint()}")
        raise CaptureSetupError(f"capture filter {expr!r}: {why}")
    try:
        numbers = [[int(x) for x in line.split()] for line in proc.stdout.split("\n") if line.strip()]
        count = numbers[0][0]
        program = [(c, jt, jf, k) for c, jt, jf, k in numbers[1:]]
    except (ValueError, IndexError) as exc:
        raise CaptureSetupError(f"capture filter {expr!r}: unexpected tcpdump -ddd output ({exc})") from None
    if count != len(program) or not program:
        raise CaptureSetupError(f"capture filter {expr!r}: tcpdump -ddd output is incomplete")
    return program


class AfPacketSource:
    """One interface captured through a TPACKET_V3 ring. Not thread-safe; one owner thread."""

    backend = "afpacket"

    def __init__(
        self,
        interface: str,
        index: int = 0,
        *,
        bpf: list[tuple[int, int, int, int]] | None = None,
        ring_mb: int = DEFAULT_RING_MB,
        block_size: int = DEFAULT_BLOCK_SIZE,
        block_timeout_ms: int = DEFAULT_BLOCK_TIMEOUT_MS,
        promiscuous: bool = True,
        fanout: tuple[int, int] | None = None,
    ) -> None:
        self.name = interface
        self.index = index  # RecordBatch.interface of every batch from this source
        self.block_size = block_size
        self.block_count = max(2, (ring_mb << 20) // block_size)
        self._next = 0
        self._sock: socket.socket | None = None
        self._ring: mmap.mmap | None = None
        try:
            ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise CaptureSetupError(f"{interface}: no such network interface") from None
        try:
            # Protocol 0: the socket receives nothing until bind(), so the ring and the filter are
            # in place before the first packet.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CaptureSetupError(f"{interface}: {permission_hint()}") from None
        except OSError as exc:
            raise CaptureSetupError(f"{interface}: cannot open a packet socket: {exc.strerror}") from None
        self._sock = sock
        try:
            self._setup(sock, interface, ifindex, bpf, block_timeout_ms, promiscuous, fanout)
        except OSError as exc:
            self.close()
            if isinstance(exc, PermissionError):
                raise CaptureSetupError(f"{interface}: {permission_hint()}") from None
            raise CaptureSetupError(
                f"{interface}: cannot set up the capture: {exc.strerror or exc}"
            ) from None
        except BaseException:
            self.close()
            raise

    def _setup(
        self,
        sock: socket.socket,
        interface: str,
        ifindex: int,
        bpf: list[tuple[int, int, int, int]] | None,
        block_timeout_ms: int,
        promiscuous: bool,
        fanout: tuple[int, int] | None,
    ) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frames = self.block_size // FRAME_SIZE * self.block_count
        req = _REQ3.pack(self.block_size, self.block_count, FRAME_SIZE, frames, block_timeout_ms, 0, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        except OSError as exc:
            mib = self.block_size * self.block_count >> 20
            raise OSError(exc.errno, f"cannot allocate a {mib} MiB capture ring ({exc.strerror})") from None
        self._ring = mmap.mmap(
            sock.fileno(),
            self.block_size * self.block_count,
            flags=mmap.MAP_SHARED,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        if bpf:
            code = b"".join(_SOCK_FILTER.pack(*insn) for insn in bpf)
            buf = ctypes.create_string_buffer(code, len(code))
            sock.setsockopt(
                socket.SOL_SOCKET, SO_ATTACH_FILTER, _SOCK_FPROG.pack(len(bpf), ctypes.addressof(buf))
            )
        sock.bind((interface, ETH_P_ALL))
        hatype = sock.getsockname()[3]
        if hatype not in _LINKTYPES:
            raise OSError(0, f"unsupported link type (ARPHRD {hatype}); Ethernet interfaces are supported")
        self.linktype = _LINKTYPES[hatype]
        if promiscuous:
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b""))
        if fanout is not None:
            group, mode = fanout
            # packed unsigned: with PACKET_FANOUT_FLAG_DEFRAG the value does not fit a C int
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", (group & 0xFFFF) | (mode << 16)))
        sock.setblocking(False)
        self.stats()  # start the kernel counters from the moment the capture is complete

    # -- reading ---------------------------------------------------------------------------------
    def fileno(self) -> int:
        if self._sock is None:
            return -1
        return self._sock.fileno()

    def read(self, max_blocks: int | None = None) -> list[RecordBatch]:
        """Batches of every block the kernel has handed over (at most `max_blocks`), oldest first."""
        ring = self._ring
        if ring is None:
            return []
        out: list[RecordBatch] = []
        bs = self.block_size
        limit = self.block_count if max_blocks is None else min(max_blocks, self.block_count)
        status_at = _BLOCK_STATUS.unpack_from
        for _ in range(limit):
            base = self._next * bs
            if not status_at(ring, base + 8)[0] & TP_STATUS_USER:
                break
            num, first, blk_len = _BLOCK_HDR.unpack_from(ring, base + 12)
            data = ring[base : base + min(blk_len, bs)]
            _BLOCK_STATUS.pack_into(ring, base + 8, TP_STATUS_KERNEL)  # the block is the kernel's again
            self._next = (self._next + 1) % self.block_count
            if num:
                out.append(self._batch(data, num, first))
        return out

    def _batch(self, data: bytes, num: int, pos: int) -> RecordBatch:
        ts: list[float] = []
        offsets: list[int] = []
        caplens: list[int] = []
        origlens: list[int] = []
        tags: list[tuple[int, int]] | None = None
        unpack = _PKT_HDR.unpack_from
        ether = self.linktype == LINKTYPE_ETHERNET
        end = len(data)
        for i in range(num):
            nxt, sec, nsec, snap, length, status, mac, _net, _hash, tci, tpid = unpack(data, pos)
            off = pos + mac
            if off + snap > end:  # never trust an offset past the block
                break
            ts.append(sec + nsec * 1e-9)
            offsets.append(off)
            caplens.append(snap)
            origlens.append(length)
            if status & TP_STATUS_VLAN_VALID and ether:
                if tags is None:
                    tags = []
                if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                    tpid = 0x8100
                tags.append((i, (tpid << 16) | tci))
            if not nxt:
                break
            pos += nxt
        if tags:
            data = _reinsert_tags(data, offsets, caplens, origlens, tags)
        return RecordBatch(data, self.linktype, self.index, ts, offsets, caplens, origlens, 0)

    def stats(self) -> tuple[int, int]:
        """(packets, drops) since the previous call (the kernel resets its counters on read)."""
        if self._sock is None:
            return 0, 0
        packets, drops, _freeze = _STATS3.unpack(
            self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        )
        return packets, drops

    def error(self) -> str | None:
        """The pending socket error (e.g. the interface went down), cleared by reading it."""
        if self._sock is None:
            return "closed"
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return os.strerror(err) if err else None

    def close(self) -> None:
        ring, self._ring = self._ring, None
        if ring is not None:
            with contextlib.suppress(BufferError):
                ring.close()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __repr__(self) -> str:
        return f"<AfPacketSource {self.name} {self.block_count}x{self.block_size >> 10} KiB>"


def _reinsert_tags(
    data: bytes,
    offsets: list[int],
    caplens: list[int],
    origlens: list[int],
    tags: list[tuple[int, int]],
) -> bytes:
    """The frames of a block with their stripped outer VLAN tags put back; offsets/lengths updated."""
    parts: list[bytes] = []
    pos = 0
    tag_at = dict(tags)
    for i, off in enumerate(offsets):
        cap = caplens[i]
        word = tag_at.get(i)
        offsets[i] = pos
        if word is None or cap < 12:
            parts.append(data[off : off + cap])
            pos += cap
            continue
        parts.append(data[off : off + 12])
        parts.append(_VLAN_TAG.pack(word >> 16, word & 0xFFFF))
        parts.append(data[off + 12 : off + cap])
        caplens[i] = cap + 4
        origlens[i] += 4
        pos += cap + 4
    return b"".join(parts)
