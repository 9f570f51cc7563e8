"""Analyses of a trained model that prune nothing permanently (per-layer sensitivity)."""
