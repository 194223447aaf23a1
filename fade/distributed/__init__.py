"""Ray Train: run the erasure loop on workers and bring the adapter back."""
