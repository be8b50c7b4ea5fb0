"""Fuzz targets for the firmware side: one per container handler, the Walker and the safe writer."""
