"""Ray Tune sweeps of the erasure's settings against H (tune/sweep.py, docs/tuning.md)."""
