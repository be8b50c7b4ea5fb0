"""User-facing errors: each carries one line naming the file (and offset/key) and what is wrong."""

from __future__ import annotations


class CamwatchError(Exception):
    """Base for errors shown to the user as one line, without a traceback."""

    exit_code = 1


class UsageError(CamwatchError):
    """Bad command line or configuration (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file problem; message names the file and the key."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path, self.key, self.problem = path, key, problem


class CaptureError(CamwatchError):
    """A capture file is damaged or not a capture; processing before `offset` is kept (exit code 1)."""

    def __init__(self, path: str, offset: int | None, problem: str) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{path}{where}: {problem}")
        self.path, self.offset, self.problem = path, offset, problem


class StorageError(CamwatchError):
    """The state store or the event file cannot be written (disk full, I/O error); everything
    committed before is intact (exit code 3, docs/reliability.md)."""

    exit_code = 3
