"""Hyperparameter sweeps in W&B's sweep format: the file's checks (`space`), the sweep folder
(`folder`) and the offline driver on W&B's own engine (`driver`)."""
