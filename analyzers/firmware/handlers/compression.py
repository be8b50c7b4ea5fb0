"""Shared helpers of the single-stream compression handlers (gzip, xz, lzma, bzip2, zstd)."""

from __future__ import annotations

from analyzers.firmware.handlers.base import Child, HandlerResult, NotMyFormat, UnpackContext
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import DecompressError, LimitExceeded

CARVE_PARTIAL_MIN = 64 * 1024

_SUFFIXES = {
    "gzip": (".gz", ".tgz", ".gzip"),
    "xz": (".xz", ".txz"),
    "lzma": (".lzma", ".lz"),
    "bzip2": (".bz2", ".tbz2", ".bzip2"),
    "zstd": (".zst", ".zstd"),
}


def child_name(kind: str, ctx: UnpackContext, stored_name: str | None = None) -> str:
    """Name of the decompressed child: the stored name (gzip FNAME), else the blob's own name
    without its compression suffix, else 'decompressed'."""
    if stored_name:
        return stored_name
    base = "" if ctx.base_offset else ctx.name  # a carved stream has no name of its own
    for suffix in _SUFFIXES.get(kind, ()):
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            stem = base[: -len(suffix)]
            return stem + ".tar" if suffix.startswith(".t") and len(suffix) > 3 else stem
    return "decompressed"


def decompress_stream(
    handler: str,
    kind: str,
    data: memoryview,
    ctx: UnpackContext,
    *,
    stored_name: str | None = None,
    metadata: dict[str, object] | None = None,
) -> HandlerResult:
    """Decompress one stream (bounded) into a single child. A truncated or corrupt stream keeps what
    was decoded and reports it; in carving mode anything incomplete is rejected as a false match."""
    info = ctx.container(handler, size=None, metadata=dict(metadata or {}))
    findings = []
    if ctx.header_only:
        return HandlerResult([info])
    try:
        out = ctx.decompress(kind, data, what=f"{kind} stream")
        info.size = out.consumed
        payload: bytes = out.data
    except LimitExceeded as exc:
        if exc.image_wide:
            raise
        # the stream is real (it decoded past the first MiB): keep the container, end the branch
        info.metadata["limit"] = exc.rule_id
        info.size = len(data)
        limit = Finding(
            exc.rule_id, Severity.LOW, exc.message[:300], path=ctx.path, category="limit", source="limits"
        )
        return HandlerResult([info], (), [limit], size=len(data))
    except DecompressError as exc:
        # inside another blob only a substantial partial stream counts (random bytes that happen to
        # carry a magic die within a few bytes)
        if not exc.partial or (ctx.carving and len(exc.partial) < CARVE_PARTIAL_MIN):
            raise NotMyFormat(str(exc)) from None
        payload = exc.partial
        info.size = len(data)
        info.metadata["truncated"] = True
        findings.append(
            ctx.finding(
                "CW-UNPACK-TRUNCATED",
                Severity.INFO,
                f"partial extraction: {exc}; {len(payload)} bytes recovered",
                offset=0,
                category="container",
            )
        )
    info.metadata["decompressed_size"] = len(payload)
    child = Child(child_name(kind, ctx, stored_name), data=payload, size=len(payload))
    return HandlerResult([info], [child], findings, size=info.size)
