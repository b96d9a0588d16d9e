"""fastvla.policies (placeholder; filled by its issue)."""
