"""Wire-format parsers for device fingerprinting (one module per protocol).

Each module offers pure functions over bytes / memoryviews: `parse*()` returns a small dataclass or
None (never raises on truncated or garbage input), and the binary formats have `build*()` /
`pack()` counterparts so tests and the scenario generator can round-trip them byte for byte.
Formats: shared/reference/camera-network.md §2-3; docs/fingerprints.md.
"""
