"""Benchmarks: ALE-Bench and PIE-Bench data, edit tables, masks, the edit runner, scoring and reports."""
