"""Hand-written MONAI training scripts: the baselines medimg's studies are measured against.

Each is what a careful researcher writes from MONAI's tutorials in about 150 lines, with the
deterministic part of the transform chain cached once (``CacheDataset``) and only the random
crops and flips redone every epoch. They import nothing from medimg, run for a wall-clock
budget, and write one JSON: the validation curve against elapsed time and the per-case test
outputs, which the benchmark scores the same way it scores medimg. The plumbing they share
(caching the splits, keeping the budget, writing the JSON) is :mod:`benchmarks.baselines.budget`.
"""
