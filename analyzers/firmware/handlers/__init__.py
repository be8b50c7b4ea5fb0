"""camwatch analyzers firmware handlers package."""
