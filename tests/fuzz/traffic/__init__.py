"""Fuzz targets for the traffic side: capture readers, protocol parsers, reassembly, matchers."""
