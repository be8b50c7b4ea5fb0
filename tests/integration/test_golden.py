"""Golden tests: replay a capture through the whole CLI and compare the NDJSON events with a
checked-in baseline (tests/golden/<name>.ndjson). `pytest --update-golden` rewrites baselines;
review their diff like code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.engine import SAMPLE_CAPTURE
from tests.conftest import CORPUS

GOLDEN = Path(__file__).resolve().parent.parent / "golden"

CASES = {
    "camera_vlan": SAMPLE_CAPTURE,
    "yi_camera": CORPUS / "pcaps" / "mudproject_yi_camera.pcap",
    "dahua_web": CORPUS / "pcaps" / "2ic80_dahua_web.pcapng",
}


def normalised_events(capture: Path, tmp_path: Path) -> list[str]:
    events = tmp_path / "events.ndjson"
    rc = main(
        ["replay", str(capture), "--events", str(events), "--state-dir", str(tmp_path / "state"), "--quiet"]
    )
    assert rc == 0
    lines = []
    for line in events.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if "pcap_filename" in event:
            event["pcap_filename"] = Path(event["pcap_filename"]).name
        lines.append(json.dumps(event, sort_keys=True, separators=(",", ":")))
    return lines


@pytest.mark.parametrize("name", sorted(CASES))
def test_events_match_golden(name: str, tmp_path: Path, update_golden: bool) -> None:
    capture = CASES[name]
    if not capture.exists():
        pytest.skip(f"capture {capture} absent (third-party corpus not present)")
    got = normalised_events(capture, tmp_path)
    golden = GOLDEN / f"{name}.ndjson"
    if update_golden or not golden.exists():
        if not update_golden:
            pytest.fail(f"{golden} missing: run pytest --update-golden and review it")
        golden.write_text("\n".join(got) + "\n", encoding="utf-8")
        return
    want = golden.read_text(encoding="utf-8").splitlines()
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        assert a == b, f"{golden.name} line {i + 1} differs:\n got: {a}\nwant: {b}"
    assert len(got) == len(want), f"{golden.name}: got {len(got)} events, baseline has {len(want)}"
