"""camwatch agent capture package."""
