"""Hostile input: bytes built around every marker the inspectors react to (PEM armour, DER headers,
dropbear key headers, passwd lines, Sofia fields, script lines) never make inspect_member, finish or
the report writers raise, and evidence stays short and printable."""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.firmware.inspect import InspectionSession
from analyzers.firmware.model import ContainerInfo, ImageReport, Member
from analyzers.firmware.report import html, jsonout, text

SESSION = InspectionSession()

MARKERS = [
    b"-----BEGIN PRIVATE KEY-----\nMIIB" + b"A" * 40 + b"\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN CERTIFICATE-----\n" + b"MIIC" * 12 + b"\n-----END CERTIFICATE-----\n",
    b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    + b"B" * 40
    + b"\n-----END OPENSSH PRIVATE KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\n" + b"C" * 44 + b"\n-----END PUBLIC KEY-----\n",
    b"\x30\x82\xff\xff\x02\x01\x00\x02\x82\x01\x01\x00",
    b"\x30\x82\x00\x10\x30\x82\x00\x08\xa0\x03\x02\x01\x02",
    b"\x30\x77\x02\x01\x01\x04\x20",
    b"\x00\x00\x00\x07ssh-rsa\x00\x00\x00",
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
    b"root:$6$rounds=5000$salt$x:0:0::/:/bin/sh\n",
    b"admin:$1$$:0:0:",
    b":0:0:",
    b'"Password" : "tlJwpbo6"',
    b"\ntelnetd -p 9 &\n",
    b"flash_eraseall /dev/mtd0\n",
    b"\x1b[2J<script>\xff\xfe",
]

chunks = st.one_of(st.sampled_from(MARKERS), st.binary(max_size=64))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(chunks, min_size=1, max_size=12), name=st.text(max_size=40))
def test_inspectors_survive_hostile_members(parts: list[bytes], name: str) -> None:
    data = b"".join(parts)
    path = f"fw!/{name}/passwd" if len(parts) % 2 else f"fw!/{name}"
    member = Member(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    findings = SESSION.inspect_member(member, data)
    SESSION.inspect_container(
        ContainerInfo("hikvision_digicap", path, 0, None, metadata={"language": data[:3]})
    )
    report = ImageReport(path=name, size=len(data), sha256=member.sha256, members=[member], findings=findings)
    SESSION.finish(report, data)
    for f in report.findings:
        assert len(f.evidence) <= 201
        assert all(ch.isprintable() for ch in f.evidence)
    html.render([report])
    jsonout.dumps([report])
    assert "\x1b" not in text.summary([report])
