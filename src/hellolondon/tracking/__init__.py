"""Experiment tracking: a local JSONL log that is always on, and Weights & Biases beside it."""

from hellolondon.tracking.base import FanoutTracker, JsonlTracker, NullTracker, Tracker

__all__ = ["FanoutTracker", "JsonlTracker", "NullTracker", "Tracker"]
