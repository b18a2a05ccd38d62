"""artifact-store."""
