"""HTML report: hostile names are escaped, the page is self-contained, and it renders in headless
Chromium with the entropy plot (an SVG with its data path) in the DOM."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from analyzers.firmware.inspect import InspectionSession
from analyzers.firmware.model import ContainerInfo, ImageReport, Member
from analyzers.firmware.report import write_html
from analyzers.firmware.report.html import entropy_svg
from tests.conftest import require_tool

XSS_NAME = 'rootfs!/www/<script>document.title="pwned"</script>.sh'
XSS_ATTR = 'rootfs!/"><img src=x onerror="document.title=1">'


def hostile_report() -> ImageReport:
    session = InspectionSession()
    members = {
        XSS_NAME: b"#!/bin/sh\ntelnetd -l /bin/sh <script>alert(1)</script>\n",
        XSS_ATTR: b"ttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100 -n root\n",
        "rootfs!/etc/passwd": b"root::0:0:root:/root:/bin/sh\n",
    }
    # random bytes then zeros: the plot must show a high then a low plateau
    image = os.urandom(64 * 1024) + b"\0" * (64 * 1024) + b"".join(members.values())
    report = ImageReport(
        path='/fw/<svg onload="x">cam.bin', size=len(image), sha256=hashlib.sha256(image).hexdigest()
    )
    for name, data in members.items():
        m = Member(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), link_target="<b>t</b>")
        report.members.append(m)
        report.findings.extend(session.inspect_member(m, data))
    info = ContainerInfo(
        "hikvision_digicap", "", 0, len(image), metadata={"language": 2, "files": []}, signature="<i>sig</i>"
    )
    report.containers.append(info)
    report.findings.extend(session.inspect_container(info))
    session.finish(report, image)
    return report


@pytest.fixture(scope="module")
def html_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html([hostile_report()], str(path))
    return path


def test_everything_from_the_image_is_escaped(html_file: Path) -> None:
    text = html_file.read_text()
    for raw in ("<script", "<img src=x", "<svg onload", "<b>t</b>", "<i>sig</i>", 'onerror="'):
        assert raw not in text, raw
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in text
    assert "&lt;i&gt;sig&lt;/i&gt;" in text


def test_page_is_self_contained(html_file: Path) -> None:
    text = html_file.read_text()
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    # no external resource: every src/href is an in-page anchor
    assert [v for v in re.findall(r'\b(?:src|href)="([^"]*)"', text) if not v.startswith("#")] == []
    assert "<link" not in text and "@import" not in text and "url(" not in text


def test_entropy_svg_path_follows_the_data() -> None:
    svg = entropy_svg([8.0, 0.0, 4.0], 256, 768, "e")
    match = re.search(r'class="entropy-line" d="([^"]+)"', svg)
    assert match is not None
    d = match.group(1)
    ys = [float(p.split(",")[1]) for p in d.lstrip("M").split(" L")]
    assert len(ys) == 3 and ys[0] < ys[2] < ys[1]  # SVG y grows downwards
    assert entropy_svg([], 0, 0, "e").startswith("<p")


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    exe = require_tool("chromium")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={user_dir}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_renders_in_headless_chromium(html_file: Path, tmp_path: Path) -> None:
    result = chromium("--dump-dom", html_file.as_uri(), user_dir=tmp_path / "profile")
    dom = result.stdout
    assert result.returncode == 0 and "</html>" in dom, result.stderr[-2000:]
    svg = re.search(r'<svg[^>]*class="entropy-plot"[^>]*>.*?</svg>', dom, re.S)
    assert svg, "entropy plot missing from the DOM"
    line = re.search(r'<path class="entropy-line" d="(M[\d., L]+)" data-points="(\d+)"', svg.group(0))
    assert line and int(line.group(2)) == len(line.group(1).split(" L")) > 10
    # the injected markup stayed text: no script element and the title was not rewritten
    assert "<script" not in dom and "<title>camwatch firmware report</title>" in dom
    assert "CW-FW-TELNET-006" in dom and "CW-FW-CRED-102" in dom and "CW-FW-INTEG-004" in dom


def test_screenshot(html_file: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", html_file.as_uri(), user_dir=tmp_path / "profile"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
