"""Client-facing repository protocols."""
