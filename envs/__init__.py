"""fastvla.envs (placeholder; filled by its issue)."""
