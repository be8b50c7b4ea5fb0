"""Coverage-guided fuzz targets (atheris) for camwatch parsers; see docs/reliability.md."""
