"""Signed rule bundles (agent/rulebundle.py) with real Ed25519 keys and real files: a packed bundle
verifies; every kind of tampering, a wrong key, a missing signature and hostile archives (traversal,
links, oversize, extension headers) are refused with a one-line message naming the bundle; verified
bundles unpack into fresh read-only directories switched in by one symlink rename."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import rulebundle as rb
from agent.catalogue import BUNDLED_RULES
from agent.errors import UsageError

CREATED = 1_700_000_000.0


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    rb.generate_key(d / "signer.pem")
    rb.generate_key(d / "other.pem")
    return d


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(BUNDLED_RULES, target)
    return target


@pytest.fixture
def bundle(tmp_path: Path, rules: Path, keydir: Path) -> Path:
    out = tmp_path / "rules.cwrb"
    rb.pack(rules, rb.load_private_key(keydir / "signer.pem"), out, version="7.1", created=CREATED)
    return out


def trusted(keydir: Path, name: str = "signer") -> list[rb.TrustKey]:
    return rb.load_trust_keys([keydir / f"{name}.pem.pub"])


def refused(path: Path, keys: list[rb.TrustKey], fragment: str) -> str:
    with pytest.raises(rb.RuleBundleError) as info:
        rb.verify_bundle(path, keys)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message
    assert "\n" not in message
    return message


def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        out = []
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            assert fh is not None
            out.append((m.name, fh.read()))
        return out


def write_tar(
    path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.USTAR_FORMAT
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue())


def file_info(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def rebuild(
    src: Path, dst: Path, change: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]
) -> None:
    write_tar(dst, [file_info(n, d) for n, d in change(members(src))])


# --------------------------------------------------------------------------- the good path


def test_pack_then_verify_gives_back_every_file(bundle: Path, rules: Path, keydir: Path) -> None:
    b = rb.verify_bundle(bundle, trusted(keydir))
    on_disk = {p.relative_to(rules).as_posix(): p.read_bytes() for p in rules.rglob("*") if p.is_file()}
    assert b.files == on_disk
    assert len(on_disk) >= 20  # the whole shipped tree: catalogues, policies, YARA, hash lists
    m = b.manifest
    assert (m.name, m.version, m.created) == ("camwatch-rules", "7.1", "2023-11-14T22:13:20Z")
    assert b.trusted_by is not None and m.key_id == b.trusted_by.key_id
    for entry in m.files:
        assert entry.sha256 == hashlib.sha256(on_disk[entry.path]).hexdigest()
    # standard tools read it: manifest and signature first, then the rules tree in sorted order
    names = [n for n, _ in members(bundle)]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert names[2:] == sorted(names[2:]) and all(n.startswith("rules/") for n in names[2:])


def test_packing_is_reproducible(tmp_path: Path, rules: Path, keydir: Path, bundle: Path) -> None:
    again = tmp_path / "again.cwrb"
    rb.pack(rules, rb.load_private_key(keydir / "signer.pem"), again, version="7.1", created=CREATED)
    assert again.read_bytes() == bundle.read_bytes()
    with tarfile.open(bundle) as tar:
        assert {m.mtime for m in tar.getmembers()} == {int(CREATED)}


def test_any_of_several_trust_keys_verifies(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    both = tmp_path / "fleet.pub"
    both.write_bytes((keydir / "other.pem.pub").read_bytes() + (keydir / "signer.pem.pub").read_bytes())
    keys = rb.load_trust_keys([both])
    assert len(keys) == 2
    assert rb.verify_bundle(bundle, keys).trusted_by == keys[1]


def test_keygen_modes_and_no_overwrite(tmp_path: Path) -> None:
    pub, key_id = rb.generate_key(tmp_path / "k.pem")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert rb.load_trust_keys([pub])[0].key_id == key_id
    before = (tmp_path / "k.pem").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        rb.generate_key(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").read_bytes() == before


def test_pack_refuses_links_and_code(tmp_path: Path, rules: Path, keydir: Path) -> None:
    key = rb.load_private_key(keydir / "signer.pem")
    (rules / "hook.py").write_text("import os\n")
    with pytest.raises(UsageError, match=r"hook\.py: not a rule data file"):
        rb.pack(rules, key, tmp_path / "x.cwrb")
    (rules / "hook.py").unlink()
    (rules / "alias.yaml").symlink_to(rules / "oui.yaml")
    with pytest.raises(UsageError, match=r"alias\.yaml: not a regular file"):
        rb.pack(rules, key, tmp_path / "x.cwrb")
    assert not (tmp_path / "x.cwrb").exists()


def test_non_ed25519_trust_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ec.pub").write_bytes(pem)
    with pytest.raises(UsageError, match="not an Ed25519 public key"):
        rb.load_trust_keys([tmp_path / "ec.pub"])


# --------------------------------------------------------------------------- tampering


def test_a_flipped_byte_anywhere_is_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    """One flipped bit in every member's data and in every header: nothing verifies."""
    keys = trusted(keydir)
    data = bundle.read_bytes()
    pos, checked = 0, 0
    while data[pos : pos + 512] != b"\0" * 512:
        header = data[pos : pos + 512]
        name = header[:100].rstrip(b"\0").decode()
        size = int(header[124:136].rstrip(b"\0 "), 8)
        for offset, fragment in (
            (pos + 20, "checksum mismatch"),  # inside the name field of the header
            (pos + 512 + size // 2, _expected_for(name)),
        ):
            if size == 0 and offset >= pos + 512:
                continue  # an empty member has no data byte to flip
            bad = bytearray(data)
            bad[offset] ^= 0x01
            target = tmp_path / "flipped.cwrb"
            target.write_bytes(bytes(bad))
            refused(target, keys, fragment)
            checked += 1
        pos += 512 + (size + 511) // 512 * 512
    assert checked >= 2 * 22


def test_random_single_bit_flips_are_all_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    """Headers, data, padding and the end-of-archive blocks: no single flipped bit goes unnoticed."""
    import random

    keys = trusted(keydir)
    data = bundle.read_bytes()
    rng = random.Random(8)
    target = tmp_path / "flip.cwrb"
    for offset in [*rng.sample(range(len(data)), 400), len(data) - 1]:
        bad = bytearray(data)
        bad[offset] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(bad))
        with pytest.raises(rb.RuleBundleError):
            rb.verify_bundle(target, keys)


def test_json_nesting_bomb_in_the_manifest_is_one_line(tmp_path: Path, keydir: Path) -> None:
    bomb = b"[" * 200_000 + b"]" * 200_000
    write_tar(tmp_path / "bomb.cwrb", [file_info("manifest.json", bomb)])
    refused(tmp_path / "bomb.cwrb", trusted(keydir), "nested too deeply")


def _expected_for(member: str) -> str:
    if member in ("manifest.json", "manifest.sig"):
        return "manifest"  # bad JSON, or a bad signature over the manifest
    return f"{member}: content does not match the signed manifest"


def test_flipped_manifest_byte_is_a_bad_signature(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    def change(ms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        name, manifest = ms[0]
        return [(name, manifest.replace(b'"version":"7.1"', b'"version":"7.2"')), *ms[1:]]

    rebuild(bundle, tmp_path / "m.cwrb", change)
    refused(tmp_path / "m.cwrb", trusted(keydir), "bad signature: the manifest or signature was modified")


def test_added_file_is_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    rebuild(bundle, tmp_path / "a.cwrb", lambda ms: [*ms, ("rules/policy/extra.yaml", b"groups: []\n")])
    refused(
        tmp_path / "a.cwrb", trusted(keydir), "rules/policy/extra.yaml: not listed in the signed manifest"
    )


def test_removed_file_is_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    rebuild(bundle, tmp_path / "r.cwrb", lambda ms: [m for m in ms if m[0] != "rules/endpoints.yaml"])
    refused(
        tmp_path / "r.cwrb",
        trusted(keydir),
        "rules/endpoints.yaml: listed in the signed manifest but missing",
    )


def test_replaced_file_is_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    rebuild(
        bundle,
        tmp_path / "p.cwrb",
        lambda ms: [(n, b"version: 1\nservices: []\n" if n == "rules/endpoints.yaml" else d) for n, d in ms],
    )
    refused(tmp_path / "p.cwrb", trusted(keydir), "rules/endpoints.yaml: content does not match")


def test_wrong_key_is_refused(bundle: Path, keydir: Path) -> None:
    msg = refused(bundle, trusted(keydir, "other"), "which is not trusted")
    assert rb.load_trust_keys([keydir / "other.pem.pub"])[0].key_id in msg


def test_missing_signature_is_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    rebuild(bundle, tmp_path / "u.cwrb", lambda ms: [m for m in ms if m[0] != "manifest.sig"])
    refused(tmp_path / "u.cwrb", trusted(keydir), "unsigned bundle (manifest.sig missing)")


def test_resigned_by_an_attacker_key_is_refused(tmp_path: Path, rules: Path, keydir: Path) -> None:
    """A consistent bundle (manifest matches the files) signed by a key nobody trusts."""
    (rules / "endpoints.yaml").write_text("version: 1\nservices: []\n")
    evil = tmp_path / "evil.cwrb"
    rb.pack(rules, rb.load_private_key(keydir / "other.pem"), evil)
    assert rb.verify_bundle(evil, trusted(keydir, "other")).trusted_by is not None
    refused(evil, trusted(keydir), "not trusted")


def test_claiming_the_trusted_key_id_does_not_help(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    """Manifest edited to claim the signer's key id, then signed with another key."""
    other = rb.load_private_key(keydir / "other.pem")

    def change(ms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        manifest = ms[0][1].replace(b'"version":"7.1"', b'"version":"9.9"')
        return [
            ("manifest.json", manifest),
            ("manifest.sig", other.sign(rb.SIGNING_CONTEXT + manifest)),
            *ms[2:],
        ]

    rebuild(bundle, tmp_path / "c.cwrb", change)
    refused(tmp_path / "c.cwrb", trusted(keydir), "bad signature")


# --------------------------------------------------------------------------- hostile archives


def _sign_manifest(keydir: Path, doc: dict[str, Any]) -> tuple[bytes, bytes]:
    manifest = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    sig = rb.load_private_key(keydir / "signer.pem").sign(rb.SIGNING_CONTEXT + manifest)
    return manifest, sig


def _manifest_for(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "format": rb.FORMAT,
        "format_version": rb.FORMAT_VERSION,
        "name": "x",
        "version": "1",
        "created": "2024-01-01T00:00:00Z",
        "key_id": "0" * 16,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files.items()
        ],
    }


def _special(name: str, kind: bytes, **attrs: Any) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, None


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (file_info("rules/../../etc/cron.d/x.yaml", b"x"), "path leaves the bundle"),
        (file_info("../outside.yaml", b"x"), "path leaves the rules tree"),
        (file_info("/etc/passwd", b"x"), "path leaves the rules tree"),
        (file_info("rules//double.yaml", b"x"), "leaves the bundle"),
        (file_info("rules/a/./b.yaml", b"x"), "not normalised"),
        (file_info("rules/.hidden.yaml", b"x"), "starts with '.'"),
        (file_info("rules/run.sh", b"#!/bin/sh\n"), "not a rule data file"),
        (_special("rules/link.yaml", tarfile.SYMTYPE, linkname="/etc/shadow"), "is a symbolic link"),
        (_special("rules/hard.yaml", tarfile.LNKTYPE, linkname="rules/oui.yaml"), "is a hard link"),
        (_special("rules/sub", tarfile.DIRTYPE), "is a directory"),
        (_special("rules/fifo.yaml", tarfile.FIFOTYPE), "is a FIFO"),
        (_special("rules/dev.yaml", tarfile.CHRTYPE), "is a character device"),
    ],
)
def test_hostile_members_are_refused(
    tmp_path: Path, bundle: Path, keydir: Path, entry: tuple[tarfile.TarInfo, bytes | None], fragment: str
) -> None:
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [file_info(n, d) for n, d in members(bundle)]
    write_tar(tmp_path / "h.cwrb", [*entries[:3], entry, *entries[3:]])
    refused(tmp_path / "h.cwrb", trusted(keydir), fragment)


def test_pax_and_gnu_extension_headers_are_refused(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [file_info(n, d) for n, d in members(bundle)]
    long_name = "rules/" + "d/" * 60 + "x.yaml"  # too long for ustar: pax 'x' / GNU 'L' header
    write_tar(tmp_path / "pax.cwrb", [*entries, file_info(long_name, b"x")], fmt=tarfile.PAX_FORMAT)
    refused(tmp_path / "pax.cwrb", trusted(keydir), "pax extended header")
    write_tar(tmp_path / "gnu.cwrb", [*entries, file_info(long_name, b"x")], fmt=tarfile.GNU_FORMAT)
    refused(tmp_path / "gnu.cwrb", trusted(keydir), "GNU long name")


def test_signed_manifest_with_traversal_paths_is_still_refused(tmp_path: Path, keydir: Path) -> None:
    """Even a trusted signer cannot make the agent write outside its directory."""
    files = {"../../../tmp/pwned.yaml": b"x: 1\n"}
    manifest, sig = _sign_manifest(keydir, _manifest_for(files))
    write_tar(tmp_path / "t.cwrb", [file_info("manifest.json", manifest), file_info("manifest.sig", sig)])
    refused(tmp_path / "t.cwrb", trusted(keydir), "path leaves the bundle")


def test_oversize_member_is_refused_before_reading_it(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    """A header announcing 1 GiB: refused from the header alone (the data is not there)."""
    header = tarfile.TarInfo("rules/huge.yaml")
    header.size = 1 << 30
    raw = header.tobuf(format=tarfile.USTAR_FORMAT)
    good = bundle.read_bytes()
    end = len(good) - 1024  # before the two end-of-archive blocks
    while good[end - 512 : end] == b"\0" * 512:
        end -= 512
    (tmp_path / "big.cwrb").write_bytes(good[:end] + raw + b"\0" * 1024)
    refused(tmp_path / "big.cwrb", trusted(keydir), f"over the {rb.MAX_FILE_BYTES}-byte limit")


def test_oversize_bundle_file_is_refused_without_reading_it(tmp_path: Path, keydir: Path) -> None:
    import resource

    big = tmp_path / "huge.cwrb"
    with open(big, "wb") as fh:
        fh.truncate(rb.MAX_BUNDLE_BYTES + 1)  # sparse: no disk space used
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(big, trusted(keydir), f"over the {rb.MAX_BUNDLE_BYTES}-byte limit")
    # generous bound: the 64 MiB file was never read into memory
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024


@pytest.mark.parametrize(
    ("mangle", "fragment"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d + b"hidden payload", "data after the end-of-archive marker"),
        (lambda d: b"PK\x03\x04" + b"\0" * 600, "not a camwatch rule bundle"),
        (lambda d: b"", "not a camwatch rule bundle"),
    ],
)
def test_damaged_archives_are_refused(
    tmp_path: Path, bundle: Path, keydir: Path, mangle: Callable[[bytes], bytes], fragment: str
) -> None:
    (tmp_path / "d.cwrb").write_bytes(mangle(bundle.read_bytes()))
    refused(tmp_path / "d.cwrb", trusted(keydir), fragment)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
        (lambda m: m["files"][0].update(size=-1), "size must be an integer"),
        (lambda m: m["files"].append(dict(m["files"][0])), "listed twice"),
        (lambda m: m.update(files=[]), "files: expected a list"),
        (lambda m: m["files"][0].update(sha256="zz"), "sha256 must be 64"),
        (lambda m: m.update(name="a\nb"), "name: expected a printable string"),
    ],
)
def test_signed_but_malformed_manifests_are_refused(
    tmp_path: Path, keydir: Path, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    files = {"oui.yaml": b"version: 1\n"}
    doc = _manifest_for(files)
    edit(doc)
    manifest, sig = _sign_manifest(keydir, doc)
    entries = [file_info("manifest.json", manifest), file_info("manifest.sig", sig)]
    write_tar(tmp_path / "mm.cwrb", [*entries, file_info("rules/oui.yaml", files["oui.yaml"])])
    refused(tmp_path / "mm.cwrb", trusted(keydir), fragment)


# --------------------------------------------------------------------------- unpacking, switching


def test_unpack_switch_and_prune(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    root = tmp_path / "state" / "rules"
    verified = rb.verify_bundle(bundle, trusted(keydir))
    first = rb.unpack(verified, root)
    assert rb.current_dir(root) is None  # unpacked, not yet in force
    rb.make_current(root, first)
    assert rb.current_dir(root) == first and (root / "current").is_symlink()
    for rel, body in verified.files.items():
        f = first / rel
        assert f.read_bytes() == body
        assert stat.S_IMODE(f.stat().st_mode) == 0o444
    assert json.loads((first / ".bundle.json").read_text())["manifest_sha256"] == verified.digest
    assert not [p for p in root.iterdir() if p.name.startswith(".unpack-")]

    made = [first]
    for _ in range(4):
        d = rb.unpack(verified, root)
        assert d not in made  # always a fresh directory: an unpacked set is never rewritten
        rb.make_current(root, d)
        rb.prune(root, {d})
        made.append(d)
    left = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    assert left == sorted(made[-1 - rb.KEEP_PREVIOUS :])
    assert rb.current_dir(root) == made[-1]


def test_unpack_refuses_an_unverified_bundle(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(rb.RuleBundleError, match="not verified"):
        rb.unpack(rb.read_bundle(bundle), tmp_path / "state" / "rules")
    assert not (tmp_path / "state").exists()


def test_hostile_bundle_writes_nothing(tmp_path: Path, bundle: Path, keydir: Path) -> None:
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [file_info(n, d) for n, d in members(bundle)]
    write_tar(tmp_path / "h.cwrb", [*entries, file_info("rules/../../../escaped.yaml", b"x: 1\n")])
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(rb.RuleBundleError):
        rb.verify_bundle(tmp_path / "h.cwrb", trusted(keydir))
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path.parent / "escaped.yaml").exists()


# --------------------------------------------------------------------------- SIGHUP: all or nothing


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_sighup_with_a_bad_bundle_keeps_the_whole_previous_rule_set(
    tmp_path: Path, rules: Path, keydir: Path
) -> None:
    """A bundle that verifies but that one analyzer refuses (a broken fingerprints.yaml) must not
    leave the analyzers that accepted it on the new rules: everything stays on the old set. A
    tampered bundle is refused before anything is unpacked. A good one is then taken whole."""
    import argparse

    from agent.config import load_config
    from agent.daemon import Daemon
    from agent.engine import Engine

    key = rb.load_private_key(keydir / "signer.pem")
    shutil.rmtree(rules / "firmware")  # not needed here; keeps YARA out of the test
    live = tmp_path / "live.cwrb"
    rb.pack(rules, key, live, version="1")
    conf = tmp_path / "camwatch.yaml"
    conf.write_text(
        f"rules: {{bundle: {live}, trust_key: {keydir / 'signer.pem.pub'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "analyzers: {updates: {scan: false}}\n"
    )
    engine = Engine(load_config(conf))
    try:
        root = rb.rules_root(tmp_path / "state")
        first = rb.current_dir(root)
        assert first is not None and engine.config.rules_dir == first
        cloud = next(a for a in engine.analyzers if a.NAME == "cloud_p2p")
        fp = next(a for a in engine.analyzers if a.NAME == "fp_tls")
        catalogue, fp_rules = engine.catalogue, fp.rules
        args = argparse.Namespace(
            config=str(conf), interface=["lo"], filter=None, listen=None, state_dir=None, policy=None
        )
        daemon = Daemon(engine, [], args)

        # v2: valid cloud signatures and catalogue changes, but a fingerprints file that fails
        _edit(rules / "cloud-signatures.yaml", "id: cs2-pppp\n", "id: cs2-pppp-v2\n")
        _edit(rules / "fingerprints.yaml", "makers: [", "makers: [[")
        rb.pack(rules, key, live, version="2")
        daemon.reload()
        assert engine.counters.reloads == {"success": 0, "failure": 1}
        ids = {s.id for s in cloud.signatures}
        assert "cs2-pppp" in ids and "cs2-pppp-v2" not in ids  # re-read from the previous set
        assert engine.catalogue is catalogue and fp.rules is fp_rules
        assert engine.config.rules_dir == first and rb.current_dir(root) == first
        assert sorted(p.name for p in root.iterdir()) == sorted([first.name, "current"])

        # v3 tampered after signing: refused before unpacking
        _edit(rules / "fingerprints.yaml", "makers: [[", "makers: [acmecam, ")
        rb.pack(rules, key, live, version="3")
        good = live.read_bytes()
        live.write_bytes(good.replace(b"acmecam", b"acmecan"))
        daemon.reload()
        assert engine.counters.reloads == {"success": 0, "failure": 2}
        assert rb.current_dir(root) == first and engine.catalogue is catalogue
        assert sorted(p.name for p in root.iterdir()) == sorted([first.name, "current"])

        # v3 as signed: taken whole
        live.write_bytes(good)
        daemon.reload()
        assert engine.counters.reloads == {"success": 1, "failure": 2}
        now = rb.current_dir(root)
        assert now is not None and now != first and engine.config.rules_dir == now
        assert json.loads((now / ".bundle.json").read_text())["version"] == "3"
        assert "cs2-pppp-v2" in {s.id for s in cloud.signatures}
        assert "acmecam" in fp.rules.makers and engine.catalogue is not catalogue
    finally:
        engine.close()
