"""The common evaluator: feature sources, protocols, result rows."""

# Baseline rows in every table -> the `model=` source that makes them. Here
# (no torch import) so that the bench planner and `train` share one list.
BASELINE_MODELS = {"random_init": "random", "pixels": "pixels"}
