"""The reference recipe, one strong default file per component (loaded by path by the harness)."""
