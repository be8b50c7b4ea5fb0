"""Update-channel helpers (analyzers/traffic/updates.py): SNI parsing, the rules file, verdicts
driven by update_sources, and the scenario images' formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.carving import sniff_firmware
from agent.catalogue import BUNDLED_RULES
from agent.errors import ConfigError
from agent.scenarios import updates as sc
from analyzers.traffic.updates import load_channels, tls_sni


def test_tls_sni() -> None:
    assert tls_sni(sc.client_hello("Upgrade.Secu100.net")) == "upgrade.secu100.net"
    assert tls_sni(b"\x16\x03\x01\x00\x05\x02" + bytes(60)) is None  # a ServerHello
    assert tls_sni(b"GET / HTTP/1.1\r\n") is None
    assert tls_sni(sc.client_hello("x")[:20]) is None


def test_bundled_channels() -> None:
    rules = load_channels(BUNDLED_RULES / "update-channels.yaml")
    by_id = {r.id: r for r in rules.http}
    assert by_id["isapi-update-firmware"].matches("PUT", "/isapi/system/updatefirmware")
    assert not by_id["isapi-update-firmware"].matches("GET", "/isapi/system/updatefirmware")
    assert by_id["dahua-upgrade-cgi"].matches("POST", "/cgi-bin/upgrade.cgi")
    assert by_id["xmeye-version-check"].version_field == "CurVersion"
    assert rules.dvrip_start == {1520} and rules.dvrip_data == {1522}
    assert rules.upgrade_hosts is not None and rules.upgrade_hosts.match("upgrade.secu100.net")
    assert not rules.upgrade_hosts.match("www.example.com")


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"version": 2}, "version"),
        ({"version": 1, "http": [{"id": "x", "paths": ["/a"], "kind": "steal"}]}, "kind"),
        ({"version": 1, "http": [{"id": "x"}]}, r"http\[0\]"),
        ({"version": 1, "update_sources": ["not-an-ip"]}, "update_sources"),
        ({"version": 1, "dvrip": {"ports": ["x"]}}, "dvrip.ports"),
    ],
)
def test_bad_channel_files(tmp_path: Path, doc: dict[str, object], key: str) -> None:
    path = tmp_path / "update-channels.yaml"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=key):
        load_channels(path)


def test_scenario_images_are_recognised_and_deterministic() -> None:
    assert sniff_firmware(sc.firmware_uimage()) == "uimage"
    assert sniff_firmware(sc.dahua_zip()) == "dahua-dh-zip"
    assert sniff_firmware(sc.plain_zip(), "manual.zip") is None
    assert sc.firmware_uimage(True) != sc.firmware_uimage(False)
    assert sc.isapi_push() == sc.isapi_push()  # same frames every call
