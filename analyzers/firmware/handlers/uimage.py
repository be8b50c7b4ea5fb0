"""Legacy U-Boot image (uImage): 64-byte big-endian header, header and data CRC-32, optional
compression, multi-file images. Inside Dahua packages the load/entry fields are a partition map."""

from __future__ import annotations

import datetime as dt
import struct
import zlib

from analyzers.firmware.handlers.base import (
    Blob,
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import DecompressError

HEADER = struct.Struct(">IIIIIIIBBBB32s")
UIMAGE_MAGIC = 0x27051956

OS_NAMES = {
    0: "invalid", 1: "openbsd", 2: "netbsd", 3: "freebsd", 4: "4_4bsd", 5: "linux", 6: "svr4", 7: "esix",
    8: "solaris", 9: "irix", 10: "sco", 11: "dell", 12: "ncr", 13: "lynxos", 14: "vxworks", 15: "psos",
    16: "qnx", 17: "u-boot", 18: "rtems", 19: "artos", 20: "unity", 21: "integrity", 22: "ose", 23: "plan9",
    24: "openrtos", 25: "arm-trusted-firmware", 26: "tee", 27: "opensbi", 28: "efi",
}  # fmt: skip
ARCH_NAMES = {
    0: "invalid", 1: "alpha", 2: "arm", 3: "x86", 4: "ia64", 5: "mips", 6: "mips64", 7: "ppc", 8: "s390",
    9: "sh", 10: "sparc", 11: "sparc64", 12: "m68k", 13: "nios", 14: "microblaze", 15: "nios2",
    16: "blackfin", 17: "avr32", 18: "st200", 19: "sandbox", 20: "nds32", 21: "openrisc", 22: "arm64",
    23: "arc", 24: "x86_64", 25: "xtensa", 26: "riscv",
}  # fmt: skip
TYPE_NAMES = {
    0: "invalid", 1: "standalone", 2: "kernel", 3: "ramdisk", 4: "multi", 5: "firmware", 6: "script",
    7: "filesystem", 8: "flat_dt", 9: "kwbimage", 10: "imximage", 11: "ublimage", 12: "omapimage",
    13: "aisimage", 14: "kernel_noload",
}  # fmt: skip
COMP_NAMES = {0: "none", 1: "gzip", 2: "bzip2", 3: "lzma", 4: "lzo", 5: "lz4", 6: "zstd"}
_DECODERS = {1: "gzip", 2: "bzip2", 3: "lzma", 6: "zstd"}


def parse_header(data: Blob) -> dict[str, object]:
    """Decode the 64-byte header; raise NotMyFormat when it is not one."""
    if len(data) < HEADER.size:
        raise NotMyFormat("shorter than a uImage header")
    fields = HEADER.unpack_from(data, 0)
    magic, hcrc, ts, size, load, entry, dcrc, os_id, arch, img_type, comp, raw_name = fields
    if magic != UIMAGE_MAGIC:
        raise NotMyFormat("no uImage magic")
    header = bytearray(data[: HEADER.size])
    header[4:8] = b"\x00\x00\x00\x00"
    name = raw_name.split(b"\x00", 1)[0].decode("latin-1")
    return {
        "name": name,
        "os": OS_NAMES.get(os_id, f"unknown({os_id})"),
        "arch": ARCH_NAMES.get(arch, f"unknown({arch})"),
        "type": TYPE_NAMES.get(img_type, f"unknown({img_type})"),
        "compression": COMP_NAMES.get(comp, f"unknown({comp})"),
        "comp_id": comp,
        "type_id": img_type,
        "data_size": size,
        "load_address": load,
        "entry_point": entry,
        "created": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat() if ts else None,
        "header_crc": hcrc,
        "header_crc_ok": zlib.crc32(header) == hcrc,
        "data_crc": dcrc,
    }


class UImageHandler(ContainerHandler):
    NAME = "uimage"
    PATTERNS = (Magic(b"\x27\x05\x19\x56"),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="U-Boot legacy image (uImage)",
        vendor="DENX U-Boot",
        description="64-byte header with CRC-32 of header and payload; wraps kernels and the partition "
        "images of Dahua and Xiongmai packages.",
        references=("u-boot include/image.h", "firmware-formats.md section 5"),
        limitations=("lzo and lz4 payloads are reported but not decompressed.",),
    )

    def matches(self, data: Blob) -> bool:
        return super().matches(data) and len(data) >= HEADER.size

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        meta = parse_header(data)
        if ctx.carving and not meta["header_crc_ok"]:
            raise NotMyFormat("uImage magic with a bad header CRC inside another blob")
        size = int(str(meta["data_size"]))
        comp = int(str(meta.pop("comp_id")))
        img_type = int(str(meta.pop("type_id")))
        findings = []
        end = HEADER.size + size
        if "dahua_dh_zip" in ctx.ancestry:
            # Dahua stores the flash partition bounds here, not addresses (firmware-formats.md 3.3)
            meta["partition"] = {"start": meta["load_address"], "end": meta["entry_point"]}
        if not meta["header_crc_ok"]:
            findings.append(
                ctx.finding(
                    "CW-FW-UIMAGE-HCRC",
                    Severity.LOW,
                    "uImage header CRC-32 mismatch",
                    offset=4,
                    category="integrity",
                )
            )
        payload = data[HEADER.size : min(end, len(data))]
        if end > len(data):
            findings.append(
                ctx.finding(
                    "CW-UNPACK-TRUNCATED",
                    Severity.LOW,
                    f"uImage payload truncated: header says {size} bytes, {len(payload)} present",
                    category="container",
                )
            )
            meta["data_crc_ok"] = False
        elif not ctx.header_only:
            meta["data_crc_ok"] = zlib.crc32(payload) == meta["data_crc"]
            if not meta["data_crc_ok"]:
                findings.append(
                    ctx.finding(
                        "CW-FW-UIMAGE-DCRC",
                        Severity.LOW,
                        "uImage data CRC-32 mismatch (payload modified after signing, or a stale CRC)",
                        offset=0x18,
                        category="integrity",
                    )
                )
        info = ctx.container(self.NAME, size=min(end, len(data)), metadata=meta)
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=info.size)
        parts = self._split_multi(payload) if img_type == 4 else [("payload", payload)]
        children = [self._decode(name, part, comp, ctx, findings) for name, part in parts]
        return HandlerResult([info], children, findings, size=info.size)

    @staticmethod
    def _split_multi(payload: memoryview) -> list[tuple[str, Blob]]:
        """Multi-file image: big-endian u32 sizes ending in 0, then the parts, 4-byte aligned."""
        sizes: list[int] = []
        pos = 0
        while pos + 4 <= len(payload) and len(sizes) < 256:
            (n,) = struct.unpack_from(">I", payload, pos)
            pos += 4
            if n == 0:
                break
            sizes.append(n)
        parts: list[tuple[str, Blob]] = []
        for index, n in enumerate(sizes):
            parts.append((f"part{index}", payload[pos : pos + n]))
            pos += (n + 3) & ~3
        return parts or [("payload", payload)]

    @staticmethod
    def _decode(name: str, raw: Blob, comp: int, ctx: UnpackContext, findings: list[Finding]) -> Child:
        kind = _DECODERS.get(comp)
        if comp == 0 or kind is None:
            if comp != 0:
                findings.append(
                    ctx.finding(
                        "CW-UNPACK-UNSUPPORTED",
                        Severity.INFO,
                        f"uImage payload compression {COMP_NAMES.get(comp, comp)} is not decoded; "
                        "raw payload scanned",
                    )
                )
            return Child(name, data=raw, size=len(raw))

        def load() -> Blob:
            try:
                return ctx.decompress(kind, raw, what=f"uImage {kind} payload", multi_stream=False).data
            except DecompressError as exc:
                if exc.partial:
                    raise
                findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"{exc}; raw payload scanned"))
                return raw

        return Child(name, loader=load)
