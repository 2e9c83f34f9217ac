"""Side-by-side benchmark of placements."""
