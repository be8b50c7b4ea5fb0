"""Telnet: recognising a telnet server from its option negotiation (IAC WILL/WONT/DO/DONT/SB on
any port) and following a login (user and password lines typed by the client, the server's answer)
so it can be compared with the default-credential table. Passwords are only compared, never kept
beyond the session object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

IAC, SB, SE = 0xFF, 0xFA, 0xF0
MAX_LINE = 128
MAX_LINES = 4
MAX_SERVER_TEXT = 4096


@dataclass(frozen=True, slots=True)
class TelnetRules:
    iac_commands: frozenset[int]
    failure: re.Pattern[str]
    success: re.Pattern[str]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TelnetRules:
        return cls(
            frozenset(int(x) for x in d.get("iac_commands") or (0xFA, 0xFB, 0xFC, 0xFD, 0xFE)),
            re.compile(str(d["failure_regex"])),
            re.compile(str(d["success_regex"])),
        )

    def negotiates(self, data: bytes | memoryview) -> bool:
        """True when a server's first bytes are telnet option negotiation."""
        return len(data) >= 3 and data[0] == IAC and data[1] in self.iac_commands


def strip_iac(data: bytes) -> bytes:
    """The data bytes of a telnet stream (option negotiation and subnegotiation removed)."""
    if IAC not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b != IAC:
            out.append(b)
            i += 1
            continue
        if i + 1 >= n:
            break
        cmd = data[i + 1]
        if cmd == IAC:
            out.append(IAC)
            i += 2
        elif cmd == SB:
            end = data.find(bytes((IAC, SE)), i + 2)
            i = n if end < 0 else end + 2
        elif cmd >= 0xFB:
            i += 3
        else:
            i += 2
    return bytes(out)


@dataclass(slots=True)
class TelnetLogin:
    """The first two lines a client types (user, password) and what the server printed after."""

    lines: list[str] = field(default_factory=list)
    partial: bytearray = field(default_factory=bytearray)
    server_after: bytearray = field(default_factory=bytearray)
    server_bytes: int = 0

    def client(self, data: bytes) -> None:
        if len(self.lines) >= 2:
            return
        for b in strip_iac(data):
            if b in (10, 13, 0):
                if self.partial:
                    self.lines.append(self.partial.decode("latin-1"))
                    self.partial = bytearray()
                    if len(self.lines) >= 2:
                        return
            elif b in (8, 127):
                self.partial = self.partial[:-1]
            elif len(self.partial) < MAX_LINE:
                self.partial.append(b)

    def server(self, data: bytes) -> None:
        self.server_bytes += len(data)
        if len(self.lines) >= 2 and len(self.server_after) < MAX_SERVER_TEXT:
            self.server_after += strip_iac(data)[: MAX_SERVER_TEXT - len(self.server_after)]

    @property
    def credentials(self) -> tuple[str, str] | None:
        return (self.lines[0], self.lines[1]) if len(self.lines) >= 2 else None

    def outcome(self, rules: TelnetRules) -> str:
        """succeeded / failed / unknown, from the server's output after the password line."""
        text = self.server_after.decode("latin-1")
        if not text.strip():
            return "unknown"
        if rules.failure.search(text):
            return "failed"
        if rules.success.search(text):
            return "succeeded"
        return "unknown"
