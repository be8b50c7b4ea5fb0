"""ONVIF WS-Discovery (UDP 3702, multicast 239.255.255.250): Probe / ProbeMatches / Hello SOAP.

Only messages in the WS-Discovery namespace count. From ProbeMatch / Hello we keep XAddrs (service
URLs) and Scopes; ONVIF scopes `onvif://www.onvif.org/<kind>/<value>` give the device name,
hardware (model), location, MAC... (values are URL-encoded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from analyzers.protocols._text import as_bytes, clean, decode_text, leaf_tags

UDP_PORT = 3702
WSD_NAMESPACES = (
    "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01",
)
SCOPE_PREFIX = "onvif://www.onvif.org/"
_KIND_RE = re.compile(r"<(?:[\w.-]+:)?(ProbeMatches|Probe|Hello|Bye|ResolveMatches|Resolve)[\s>/]")


@dataclass(slots=True)
class WsdMessage:
    kind: str  # ProbeMatches | Probe | Hello | Bye | ResolveMatches | Resolve
    xaddrs: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    types: str | None = None

    @property
    def is_announcement(self) -> bool:
        return self.kind in ("ProbeMatches", "Hello", "ResolveMatches")

    def scope(self, kind: str) -> str | None:
        """First ONVIF scope value of a kind ("name", "hardware", "location/city"...), decoded."""
        prefix = SCOPE_PREFIX + kind.strip("/").lower() + "/"
        for s in self.scopes:
            if s.lower().startswith(prefix):
                return clean(unquote(s[len(prefix) :]).replace("_", " ") if kind == "name" else
                             unquote(s[len(prefix) :]))  # fmt: skip
        return None

    @property
    def name(self) -> str | None:
        return self.scope("name")

    @property
    def hardware(self) -> str | None:
        return self.scope("hardware")


def parse(data: bytes | bytearray | memoryview) -> WsdMessage | None:
    raw = as_bytes(data)
    if not raw.lstrip().startswith(b"<"):
        return None
    text = decode_text(raw)
    if not any(ns in text for ns in WSD_NAMESPACES):
        return None
    m = _KIND_RE.search(text)
    if m is None:
        return None
    leaves = leaf_tags(text)
    xaddrs = (leaves.get("XAddrs") or "").split()
    scopes = (leaves.get("Scopes") or "").split()
    return WsdMessage(m.group(1), xaddrs[:16], scopes[:64], clean(leaves.get("Types"), 256))


def build_probe_matches(xaddrs: list[str], scopes: list[str], *, message_id: str, relates_to: str,
                        address: str) -> bytes:  # fmt: skip
    """A ProbeMatches envelope like the ones cameras send (for tests and scenarios)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        "<SOAP-ENV:Header>"
        f"<wsa:MessageID>{message_id}</wsa:MessageID><wsa:RelatesTo>{relates_to}</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>"
        "</SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{address}</wsa:Address></wsa:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
        f"<d:Scopes>{' '.join(scopes)}</d:Scopes><d:XAddrs>{' '.join(xaddrs)}</d:XAddrs>"
        "<d:MetadataVersion>1</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()
