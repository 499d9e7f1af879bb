"""The PyTorch backend. Imported only when a run uses it."""
