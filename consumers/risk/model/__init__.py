"""Package data: the versioned risk model files (JSON)."""
