"""ale-edit: ALE-Edit, a training-free attribute-leakage-free multi-object image editor, and ALE-Bench."""
