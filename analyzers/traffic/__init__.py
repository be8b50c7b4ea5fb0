"""camwatch analyzers traffic package."""
