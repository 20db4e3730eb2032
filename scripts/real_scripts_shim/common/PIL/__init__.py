"""check_real_scripts.py's stand-in for Pillow: only Image.fromarray(...).save(...)."""

__version__ = "0+raxcheck"
