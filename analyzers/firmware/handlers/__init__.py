"""Container handlers. BUILTIN_HANDLERS is the registry: adding a format = one module + one line.

Order matters where magics are shared or weak: vendor formats come before the generic format they
are built on (Xiongmai before plain ZIP), and the weakest magic (LZMA-alone) comes last. Third-party
handlers are loaded from the `camwatch.firmware_handlers` entry-point group; each entry point names
a ContainerHandler subclass (or a sequence of them) and is appended after the built-ins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points

from analyzers.firmware.handlers.base import ContainerHandler
from analyzers.firmware.handlers.bzip2_stream import Bzip2Handler
from analyzers.firmware.handlers.cpio_archive import CpioHandler
from analyzers.firmware.handlers.cramfs import CramfsHandler
from analyzers.firmware.handlers.dahua_dh import DahuaDhZipHandler
from analyzers.firmware.handlers.gzip_stream import GzipHandler
from analyzers.firmware.handlers.hikvision_digicap import HikvisionDigicapHandler
from analyzers.firmware.handlers.jffs2 import Jffs2Handler
from analyzers.firmware.handlers.lzma_alone import LzmaHandler
from analyzers.firmware.handlers.romfs import RomfsHandler
from analyzers.firmware.handlers.squashfs import SquashfsHandler
from analyzers.firmware.handlers.tar_archive import TarHandler
from analyzers.firmware.handlers.ubi import UbiHandler
from analyzers.firmware.handlers.ubifs import UbifsHandler
from analyzers.firmware.handlers.uimage import UImageHandler
from analyzers.firmware.handlers.xiongmai import XiongmaiInstallDescHandler
from analyzers.firmware.handlers.xz_stream import XzHandler
from analyzers.firmware.handlers.zip_archive import ZipHandler
from analyzers.firmware.handlers.zstd_stream import ZstdHandler

ENTRY_POINT_GROUP = "camwatch.firmware_handlers"

BUILTIN_HANDLERS: tuple[type[ContainerHandler], ...] = (
    HikvisionDigicapHandler,
    DahuaDhZipHandler,
    XiongmaiInstallDescHandler,
    ZipHandler,
    UImageHandler,
    SquashfsHandler,
    CramfsHandler,
    Jffs2Handler,
    UbiHandler,
    UbifsHandler,
    RomfsHandler,
    CpioHandler,
    TarHandler,
    GzipHandler,
    XzHandler,
    Bzip2Handler,
    ZstdHandler,
    LzmaHandler,
)

log = logging.getLogger(__name__)


def plugin_handlers() -> list[type[ContainerHandler]]:
    """Handler classes contributed by installed packages through the entry-point group."""
    found: list[type[ContainerHandler]] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plugin must not stop the scanner
            log.warning("firmware handler plugin %s failed to load: %s", point.name, exc)
            continue
        candidates: Iterable[object] = loaded if isinstance(loaded, list | tuple) else (loaded,)
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, ContainerHandler) and candidate.NAME:
                found.append(candidate)
            else:
                log.warning("firmware handler plugin %s: %r is not a ContainerHandler", point.name, candidate)
    return found


def load_handlers(*, plugins: bool = True) -> tuple[ContainerHandler, ...]:
    """Instances of the built-in handlers, then the plugins (a plugin cannot shadow a built-in NAME)."""
    classes = list(BUILTIN_HANDLERS)
    names = {cls.NAME for cls in classes}
    if plugins:
        for cls in plugin_handlers():
            if cls.NAME in names:
                log.warning("firmware handler plugin %s ignored: name already registered", cls.NAME)
                continue
            names.add(cls.NAME)
            classes.append(cls)
    return tuple(cls() for cls in classes)


__all__ = ["BUILTIN_HANDLERS", "ENTRY_POINT_GROUP", "ContainerHandler", "load_handlers", "plugin_handlers"]
