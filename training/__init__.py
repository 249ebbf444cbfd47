"""Offline training: datasets, pre-transforms, targets, losses, amalgamation, trainer,
evaluation."""
