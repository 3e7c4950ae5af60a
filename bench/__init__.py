"""bench: a benchmark harness for local-learning methods (Greedy InfoMax and its baselines)."""

__version__ = "0.1.0"
