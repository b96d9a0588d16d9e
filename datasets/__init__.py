"""fastvla.datasets (placeholder; filled by its issue)."""
