"""Persistent state: devices, destinations, DNS-derived names, baseline, findings and meta values.

One SQLite file (`<state_dir>/camwatch.db`) in WAL mode, so `camwatch devices` or a backup can read
while the daemon writes. Writers batch: no write method commits; the pipeline calls `commit()` every
few seconds and at the end. The schema is versioned (`schema_version` table) and upgraded by ordered
migrations when the store is opened. Any SQLite failure is reported as a one-line `CamwatchError`
naming the database file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, ParamSpec, TypeVar

from agent.errors import CamwatchError, StorageError, UsageError
from agent.stats import SEVERITIES

DB_NAME = "camwatch.db"
SQLITE_IOERR = 10  # primary result codes (sqlite3.h)
SQLITE_FULL = 13

SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


class Migration(NamedTuple):
    version: int
    description: str
    statements: tuple[str, ...]


# Ordered, append-only. Never edit a released migration: add a new one (an old database replays
# everything after its recorded version, each step in its own transaction).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
            """CREATE TABLE devices (
                mac TEXT PRIMARY KEY,
                vendor TEXT,
                class TEXT,
                first_seen REAL,
                last_seen REAL,
                record TEXT NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE destinations (
                device TEXT NOT NULL,
                dest_ip TEXT NOT NULL,
                dest_port INTEGER NOT NULL,
                proto TEXT NOT NULL,
                first_seen REAL NOT NULL,
                last_seen REAL NOT NULL,
                count INTEGER NOT NULL,
                info TEXT NOT NULL,
                PRIMARY KEY (device, dest_ip, dest_port, proto)
            ) WITHOUT ROWID""",
            """CREATE TABLE names (
                device TEXT NOT NULL,
                ip TEXT NOT NULL,
                name TEXT NOT NULL,
                first_seen REAL NOT NULL,
                last_seen REAL NOT NULL,
                PRIMARY KEY (device, ip, name)
            ) WITHOUT ROWID""",
            """CREATE TABLE baseline (
                device TEXT NOT NULL,
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                ts REAL NOT NULL,
                PRIMARY KEY (device, kind, value)
            ) WITHOUT ROWID""",
            """CREATE TABLE findings (
                id INTEGER PRIMARY KEY,
                rule_id TEXT NOT NULL,
                severity TEXT NOT NULL,
                message TEXT NOT NULL,
                device TEXT,
                src_ip TEXT,
                dest_ip TEXT,
                dest_port INTEGER,
                ts REAL NOT NULL,
                event TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "findings.severity_rank for severity filters; devices.model and devices.ip columns",
        (
            "ALTER TABLE findings ADD COLUMN severity_rank INTEGER NOT NULL DEFAULT 0",
            "UPDATE findings SET severity_rank = CASE severity "
            + " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in SEVERITY_RANK.items())
            + " ELSE 0 END",
            "CREATE INDEX findings_by_rank_ts ON findings (severity_rank, ts)",
            "CREATE INDEX findings_by_ts ON findings (ts)",
            "ALTER TABLE devices ADD COLUMN model TEXT",
            "ALTER TABLE devices ADD COLUMN ip TEXT",
            "UPDATE devices SET model = json_extract(record, '$.model'), ip = json_extract(record, '$.ip') "
            "WHERE json_valid(record)",
        ),
    ),
    Migration(
        3,
        "destinations.verdict column (from the info JSON) for listing and tables",
        (
            "ALTER TABLE destinations ADD COLUMN verdict TEXT",
            "UPDATE destinations SET verdict = json_extract(info, '$.verdict') WHERE json_valid(info)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


class NameRecord(NamedTuple):
    """One DNS-derived name: `device` asked for `name` and was answered with `ip`."""

    device: str
    ip: str
    name: str
    first_seen: float
    last_seen: float


P = ParamSpec("P")
R = TypeVar("R")


def _db_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn SQLite failures into one-line CamwatchErrors naming the database file."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            assert isinstance(store, StateStore)
            err = store._error(exc)
            if not store.read_only:
                # The open batch may now lack this write (or SQLite rolled it back already): it must
                # not be committed later with a hole in it. close() rolls it back instead.
                store._failure = store._failure or err
            raise err from None

    return wrapper


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class StateStore:
    """The camwatch state database. Not thread-safe: use it from the pipeline thread only
    (readers in other processes open their own `StateStore(..., read_only=True)`)."""

    def __init__(self, state_dir: Path | str, *, read_only: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None
        self._failure: CamwatchError | None = None  # first write error since the last commit
        try:
            self._conn = self._open()
            self._configure()
            self._migrate()
        except sqlite3.Error as exc:
            err = self._error(exc)
            self._close_quietly()
            raise err from None
        except CamwatchError:
            self._close_quietly()
            raise

    # ----------------------------------------------------------------- opening and schema

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            if not self.path.is_file():
                raise CamwatchError(f"{self.path}: no camwatch state database here yet (run camwatch first)")
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (see _begin/commit).
            return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CamwatchError(f"{self.state_dir}: cannot create state directory: {exc.strerror}") from None
        if self.path.exists() and not self.path.is_file():
            raise CamwatchError(f"{self.path}: not a regular file")
        return sqlite3.connect(self.path, isolation_level=None, timeout=10.0)

    def _configure(self) -> None:
        conn = self._c
        # Reading the schema first makes a non-database file fail here with a clear error.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute("PRAGMA busy_timeout = 10000")
        if not self.read_only:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CamwatchError(f"{self.path}: cannot switch the database to WAL mode (got {mode!r})")
            # NORMAL is durable across application crashes in WAL mode; only an OS crash or power
            # loss can drop the last commits, which a monitor can afford for a large speed gain.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = OFF")

    def _current_version(self) -> int:
        conn = self._c
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not has_table:
            return 0
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        version = self._current_version()
        if version > SCHEMA_VERSION:
            raise CamwatchError(
                f"{self.path}: schema version {version} is newer than this camwatch supports "
                f"({SCHEMA_VERSION}); upgrade camwatch or use another state directory"
            )
        if version == SCHEMA_VERSION:
            return
        if self.read_only:
            raise CamwatchError(
                f"{self.path}: schema version {version} needs upgrading to {SCHEMA_VERSION}; "
                "run camwatch once with write access to the state directory"
            )
        conn = self._c
        for migration in MIGRATIONS:
            # IMMEDIATE takes the write lock before re-reading the version, so two processes
            # opening an old database at once cannot both apply the same step.
            conn.execute("BEGIN IMMEDIATE")
            try:
                if migration.version <= self._current_version():
                    conn.execute("COMMIT")
                    continue
                if migration.version == 1:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version ("
                        "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL, description TEXT NOT NULL)"
                    )
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                    (migration.version, time.time(), migration.description),
                )
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does that); keep the first error.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        """The schema version of the open database (SCHEMA_VERSION after a successful open)."""
        return self._current_version()

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CamwatchError(f"{self.path}: state store is closed")
        return self._conn

    def _error(self, exc: sqlite3.Error) -> CamwatchError:
        text = str(exc).strip() or type(exc).__name__
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # primary result code
        if code == SQLITE_FULL or "database or disk is full" in text:
            return StorageError(
                f"{self.path}: no space left on device (SQLite: {text}); "
                "the state store keeps everything up to its last commit"
            )
        if code == SQLITE_IOERR:
            return StorageError(
                f"{self.path}: I/O error writing the state store (SQLite: {text}); "
                "the state store keeps everything up to its last commit"
            )
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return CamwatchError(
                f"{self.path}: damaged or not a camwatch state database ({text}); "
                "move it aside to start with empty state"
            )
        if "locked" in text or "busy" in text:
            return CamwatchError(f"{self.path}: database is locked by another process ({text})")
        if "readonly" in text or "read-only" in text:
            return CamwatchError(f"{self.path}: database is read-only ({text})")
        return CamwatchError(f"{self.path}: database error: {text}")

    def _begin(self) -> sqlite3.Connection:
        """Open the batch transaction on the first write since the last commit."""
        conn = self._c
        if self.read_only:
            raise CamwatchError(f"{self.path}: state store opened read-only")
        if not conn.in_transaction:
            conn.execute("BEGIN")
        return conn

    # ----------------------------------------------------------------- devices

    @_db_errors
    def upsert_device(self, mac: str, record: dict[str, Any]) -> None:
        """Insert or update a device. `record` is merged key by key over the stored one;
        first_seen keeps the minimum and last_seen the maximum of old and new."""
        conn = self._begin()
        mac = mac.lower()
        row = conn.execute("SELECT record FROM devices WHERE mac = ?", (mac,)).fetchone()
        old: dict[str, Any] = json.loads(row[0]) if row else {}
        merged = {**old, **record}
        first = _min(_as_float(old.get("first_seen")), _as_float(record.get("first_seen")))
        last = _max(_as_float(old.get("last_seen")), _as_float(record.get("last_seen")))
        if first is not None:
            merged["first_seen"] = first
        if last is not None:
            merged["last_seen"] = last
        merged.setdefault("mac", mac)
        dev_class = merged.get("class", merged.get("device_class"))
        conn.execute(
            "INSERT INTO devices (mac, vendor, class, model, ip, first_seen, last_seen, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (mac) DO UPDATE SET vendor = excluded.vendor, class = excluded.class, "
            "model = excluded.model, ip = excluded.ip, first_seen = excluded.first_seen, "
            "last_seen = excluded.last_seen, record = excluded.record",
            (
                mac,
                _opt_text(merged.get("vendor")),
                _opt_text(dev_class),
                _opt_text(merged.get("model")),
                _opt_text(merged.get("ip")),
                first,
                last,
                _json(merged),
            ),
        )

    @_db_errors
    def load_devices(self) -> dict[str, dict[str, Any]]:
        """All devices by MAC, each the merged JSON record (with mac, first_seen, last_seen)."""
        rows = self._c.execute("SELECT mac, record FROM devices ORDER BY mac").fetchall()
        return {mac: json.loads(record) for mac, record in rows}

    # ----------------------------------------------------------------- destinations

    @_db_errors
    def record_destination(
        self, device: str, dest_ip: str, dest_port: int, proto: str, info: dict[str, Any], ts: float
    ) -> bool:
        """Record that `device` talked to dest_ip:dest_port/proto at `ts`.

        Returns True when this (device, dest_ip, dest_port, proto) key is new. Otherwise bumps the
        count, widens first/last seen and merges `info` over the stored info (JSON merge patch).
        """
        conn = self._begin()
        info_text = _json(info)
        verdict = info.get("verdict")
        row = conn.execute(
            "INSERT INTO destinations "
            "(device, dest_ip, dest_port, proto, first_seen, last_seen, count, info, verdict) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (device, dest_ip, dest_port, proto) DO UPDATE SET "
            "first_seen = min(first_seen, excluded.first_seen), "
            "last_seen = max(last_seen, excluded.last_seen), "
            "count = count + 1, "
            "info = CASE WHEN excluded.info = '{}' THEN info ELSE json_patch(info, excluded.info) END, "
            "verdict = coalesce(excluded.verdict, verdict) "
            "RETURNING count",
            (device, dest_ip, int(dest_port), proto, ts, ts, info_text, _opt_text(verdict)),
        ).fetchone()
        return bool(row[0] == 1)

    @_db_errors
    def load_destination_keys(self) -> set[tuple[str, str, int, str]]:
        rows = self._c.execute("SELECT device, dest_ip, dest_port, proto FROM destinations").fetchall()
        return {(d, ip, int(port), proto) for d, ip, port, proto in rows}

    @_db_errors
    def list_destinations(self, device: str | None = None) -> list[dict[str, Any]]:
        """Destinations (all, or one device's), ordered by device then first sighting."""
        sql = (
            "SELECT device, dest_ip, dest_port, proto, first_seen, last_seen, count, verdict, info "
            "FROM destinations"
        )
        params: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            params = (device,)
        sql += " ORDER BY device, first_seen, dest_ip, dest_port, proto"
        out = []
        for dev, ip, port, proto, first, last, count, verdict, info in self._c.execute(sql, params):
            out.append(
                {
                    "device": dev,
                    "dest_ip": ip,
                    "dest_port": int(port),
                    "proto": proto,
                    "first_seen": first,
                    "last_seen": last,
                    "count": int(count),
                    "verdict": verdict,
                    "info": json.loads(info),
                }
            )
        return out

    @_db_errors
    def destination_counts(self) -> dict[str, int]:
        """Number of distinct destinations per device (for tables and summaries)."""
        rows = self._c.execute("SELECT device, count(*) FROM destinations GROUP BY device").fetchall()
        return {dev: int(n) for dev, n in rows}

    # ----------------------------------------------------------------- DNS-derived names

    @_db_errors
    def record_name(self, device: str, ip: str, name: str, ts: float) -> None:
        """`device` resolved `name` and got `ip` at `ts` (names are stored lower-case, without the
        trailing dot)."""
        self._begin().execute(
            "INSERT INTO names (device, ip, name, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (device, ip, name) DO UPDATE SET "
            "first_seen = min(first_seen, excluded.first_seen), "
            "last_seen = max(last_seen, excluded.last_seen)",
            (device, ip, name.rstrip(".").lower(), ts, ts),
        )

    @_db_errors
    def load_names(self) -> list[NameRecord]:
        """Every (device, ip, name) with first/last seen, oldest last sighting first, so a cache
        rebuilt by replaying the list in order ends with the most recent answer per address."""
        rows = self._c.execute(
            "SELECT device, ip, name, first_seen, last_seen FROM names ORDER BY last_seen, device, ip, name"
        ).fetchall()
        return [NameRecord(*row) for row in rows]

    # ----------------------------------------------------------------- baseline

    @_db_errors
    def add_baseline(self, device: str, kind: str, value: str, ts: float) -> None:
        """Learn (kind, value) as normal for `device`; the first learning time is kept."""
        self._begin().execute(
            "INSERT OR IGNORE INTO baseline (device, kind, value, ts) VALUES (?, ?, ?, ?)",
            (device, kind, value, ts),
        )

    @_db_errors
    def load_baseline(self) -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = {}
        for device, kind, value in self._c.execute("SELECT device, kind, value FROM baseline"):
            out.setdefault(device, set()).add((kind, value))
        return out

    # ----------------------------------------------------------------- meta

    @_db_errors
    def get_meta(self, key: str) -> str | None:
        row = self._c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_db_errors
    def set_meta(self, key: str, value: str) -> None:
        self._begin().execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    # ----------------------------------------------------------------- findings

    @_db_errors
    def add_finding(self, finding: dict[str, Any]) -> None:
        """Store an alert/finding: rule_id, severity, message, device, src_ip, dest_ip, dest_port,
        ts, and `event` (the EVE record; the finding itself is stored when it has none)."""
        severity = str(finding.get("severity", "info")).lower()
        event = finding.get("event")
        if event is None:
            event = {k: v for k, v in finding.items() if k != "event"}
        dest_port = finding.get("dest_port")
        self._begin().execute(
            "INSERT INTO findings (rule_id, severity, severity_rank, message, device, src_ip, dest_ip, "
            "dest_port, ts, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(finding.get("rule_id", "")),
                severity,
                # Unknown severities rank with "info" so they are listed, never hidden, by filters.
                SEVERITY_RANK.get(severity, 0),
                str(finding.get("message", "")),
                _opt_text(finding.get("device")),
                _opt_text(finding.get("src_ip")),
                _opt_text(finding.get("dest_ip")),
                None if dest_port is None else int(dest_port),
                float(finding.get("ts", 0.0)),
                event if isinstance(event, str) else _json(event),
            ),
        )

    @_db_errors
    def list_findings(
        self, severity_at_least: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Findings, newest first, optionally only those at or above a severity."""
        sql = (
            "SELECT id, rule_id, severity, message, device, src_ip, dest_ip, dest_port, ts, event "
            "FROM findings"
        )
        params: list[Any] = []
        if severity_at_least is not None:
            level = severity_at_least.lower()
            if level not in SEVERITY_RANK:
                raise UsageError(f"unknown severity {severity_at_least!r} (known: {', '.join(SEVERITIES)})")
            sql += " WHERE severity_rank >= ?"
            params.append(SEVERITY_RANK[level])
        sql += " ORDER BY ts DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        out = []
        for fid, rule_id, severity, message, device, src_ip, dest_ip, dest_port, ts, event in self._c.execute(
            sql, params
        ):
            try:
                parsed = json.loads(event)
            except ValueError:
                parsed = event
            out.append(
                {
                    "id": fid,
                    "rule_id": rule_id,
                    "severity": severity,
                    "message": message,
                    "device": device,
                    "src_ip": src_ip,
                    "dest_ip": dest_ip,
                    "dest_port": dest_port,
                    "ts": ts,
                    "event": parsed,
                }
            )
        return out

    # ----------------------------------------------------------------- lifecycle

    @_db_errors
    def commit(self) -> None:
        """Commit the batch. After a failed write the batch is rolled back instead and that first
        error raised again: a commit never stores a batch with a write missing from it."""
        conn = self._c
        if self._failure is not None:
            failure, self._failure = self._failure, None
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise failure
        if conn.in_transaction:
            conn.execute("COMMIT")

    @_db_errors
    def discard(self) -> None:
        """Roll back everything since the last commit (the events of this batch could not all be
        written, so a rerun must derive and emit them again)."""
        self._failure = None
        conn = self._c
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    @_db_errors
    def integrity_check(self) -> bool:
        rows = self._c.execute("PRAGMA integrity_check").fetchall()
        return len(rows) == 1 and rows[0][0] == "ok"

    @_db_errors
    def journal_mode(self) -> str:
        return str(self._c.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def close(self) -> None:
        """Commit what is pending and close; safe to call twice."""
        if self._conn is None:
            return
        # No explicit checkpoint: the last connection to close checkpoints and removes the WAL by
        # itself, and a forced one here would wait on the daemon's open batch when a short-lived
        # `camwatch devices` closes while the daemon runs.
        try:
            if self._failure is not None:
                # Already reported when the write failed; the batch is dropped, not committed.
                with contextlib.suppress(CamwatchError):
                    self.discard()
            else:
                self.commit()
        finally:
            self._close_quietly()

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Every write method leaves the database consistent, so even on an exception (Ctrl-C in a
        # replay) the pending batch is worth keeping: close() commits it.
        self.close()


def _opt_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        value = ",".join(str(v) for v in value)
    return str(value)
