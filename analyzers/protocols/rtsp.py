"""RTSP (TCP 554) message heads: `Server` and the Digest realm of a 401 response.

Dahua cameras put their serial number in the realm ("Login to 4H01D66PAJ2FA64"); the realm
patterns that extract it live in rules/fingerprints.yaml.
"""

from __future__ import annotations

from analyzers.protocols import http_head
from analyzers.protocols.http_head import Head

TCP_PORT = 554


def parse(data: bytes | bytearray | memoryview) -> Head | None:
    """An RTSP request or response head, or None (interleaved RTP `$` frames included)."""
    if len(data) < 12 or data[0] == 0x24:  # '$': interleaved binary data
        return None
    return http_head.parse(data, ("RTSP",))
