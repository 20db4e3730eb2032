"""raximport: shape-checked, auto-jitted, OOM-safe JAX training scripts with no code changes."""

__version__ = "0.1.0"
