"""camwatch analyzers: traffic analyzers (analyzers/traffic) and firmware handlers (analyzers/firmware).

TRAFFIC_ANALYZERS is the registry: adding a traffic analyzer is one module plus one line here.
Order matters only where one analyzer reads what another wrote for the same packet
(e.g. DNS answers are cached before the destination verdict of a later flow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyzers.base import Analyzer

    TRAFFIC_ANALYZERS: tuple[type[Analyzer], ...]


def _traffic_analyzers() -> tuple[type[Analyzer], ...]:
    from analyzers.traffic.cloud_p2p import CloudP2PAnalyzer
    from analyzers.traffic.destinations import DestinationAnalyzer
    from analyzers.traffic.dhcp import DhcpAnalyzer
    from analyzers.traffic.dns import DnsAnalyzer
    from analyzers.traffic.exploits import ExploitAnalyzer
    from analyzers.traffic.fp_banners import FpBannerAnalyzer
    from analyzers.traffic.fp_discovery import FpDiscoveryAnalyzer
    from analyzers.traffic.fp_tls import FpTlsAnalyzer
    from analyzers.traffic.updates import UpdateAnalyzer

    return (
        DhcpAnalyzer,
        DnsAnalyzer,
        CloudP2PAnalyzer,  # before DestinationAnalyzer: names a flow's service from its first payload
        DestinationAnalyzer,
        UpdateAnalyzer,
        ExploitAnalyzer,
        FpDiscoveryAnalyzer,
        FpBannerAnalyzer,
        FpTlsAnalyzer,
    )


def __getattr__(name: str) -> Any:
    # built on first use: importing analyzers.firmware (a firmware scan) must not import the
    # traffic analyzers, which cost ~0.3 s of start-up
    if name == "TRAFFIC_ANALYZERS":
        registry = _traffic_analyzers()
        globals()[name] = registry
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
