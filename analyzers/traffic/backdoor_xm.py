"""Xiongmai / HiSilicon DVR specifics: DVRIP ("Sofia", TCP 34567) login messages, the port-9530
telnet-enable knock and the port-9527 debug console (rules/traffic-signatures.yaml, `xiongmai:`).

DVRIP framing (camera-network.md section 2.7): a 20-byte little-endian header `<BB2xII2xHI`
(head 0xFF, version, session, sequence, message id, body length), then a JSON body ending in
"\\n\\0". A login (message 1000) carries `UserName` and `PassWord`, the latter the Sofia hash.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DVRIP_HEADER = struct.Struct("<BB2xII2xHI")
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class XiongmaiRules:
    head: int
    login_msg_ids: frozenset[int]
    knock: bytes
    knock_prefix: bytes
    knock_replies: tuple[bytes, ...]
    console_server: re.Pattern[str]
    console_client: re.Pattern[str]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XiongmaiRules:
        return cls(
            int(d.get("dvrip_head", 0xFF)),
            frozenset(int(x) for x in d.get("login_msg_ids") or (1000,)),
            str(d["knock"]).encode("latin-1"),
            bytes.fromhex(str(d.get("knock_prefix_hex") or "")),
            tuple(str(r).encode("latin-1") for r in d.get("knock_replies") or ()),
            re.compile(str(d["console_server_regex"])),
            re.compile(str(d["console_client_regex"])),
        )

    # -- DVRIP ----------------------------------------------------------------------------------
    def logins(self, stream: bytes) -> Iterator[tuple[str, str, str]]:
        """(user, password hash, login type) of the login messages in a client byte stream."""
        pos = 0
        n = len(stream)
        while pos + DVRIP_HEADER.size <= n:
            head, _version, _session, _seq, msg_id, length = DVRIP_HEADER.unpack_from(stream, pos)
            if head != self.head or length > MAX_BODY:
                return  # not DVRIP (or lost framing): stop rather than guess
            body = stream[pos + DVRIP_HEADER.size : pos + DVRIP_HEADER.size + length]
            if msg_id in self.login_msg_ids:
                login = _json_object(body)
                if login is not None:
                    user, pw = login.get("UserName"), login.get("PassWord")
                    if isinstance(user, str) and isinstance(pw, str):
                        yield user, pw, str(login.get("LoginType", ""))
            if len(body) < length:
                return  # incomplete message: wait for more bytes
            pos += DVRIP_HEADER.size + length

    def is_dvrip(self, stream: bytes) -> bool:
        return len(stream) >= DVRIP_HEADER.size and stream[0] == self.head and stream[1] in (0, 1)

    # -- port 9530 knock ------------------------------------------------------------------------
    def knock_at(self, stream: bytes) -> int:
        """Offset of the telnet-enable request in a client stream (-1 when absent)."""
        i = stream.find(self.knock)
        if i < 0:
            return -1
        if self.knock_prefix and stream[max(0, i - len(self.knock_prefix)) : i] != self.knock_prefix:
            return -1
        return i

    def knock_progress(self, server: bytes) -> list[str]:
        """Which of the expected server replies (challenge, verified, opened) were seen."""
        return [r.decode("latin-1") for r in self.knock_replies if r in server]

    # -- port 9527 console ----------------------------------------------------------------------
    def console(self, server: bytes, client: bytes) -> str | None:
        """Evidence when the session looks like a text console (prompt or typed login line)."""
        for side, data, rx in (
            ("server", server, self.console_server),
            ("client", client, self.console_client),
        ):
            if not data or not _mostly_text(data[:512]):
                continue
            text = data[:2048].decode("latin-1")
            m = rx.search(text)
            if m is not None:
                return f"{side}: {text[max(0, m.start() - 40) : m.end() + 40]}"
        return None


def _mostly_text(data: bytes) -> bool:
    printable = sum(1 for b in data if 32 <= b < 127 or b in (9, 10, 13))
    return printable >= 0.9 * len(data)


def _json_object(body: bytes) -> dict[str, Any] | None:
    text = body.rstrip(b"\x00\n\r ").decode("utf-8", "replace")
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
