"""camwatch analyzers firmware package."""
