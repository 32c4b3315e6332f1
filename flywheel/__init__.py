"""Flywheel: a workflow-orchestrated MLOps platform for recommenders that learn from their users."""

__version__ = "0.1.0"
