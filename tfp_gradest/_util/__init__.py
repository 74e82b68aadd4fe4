"""Internal helpers: calling targets with structured samples, building log-weights."""
