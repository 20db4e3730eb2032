"""Enable raximport at interpreter start where raximport.pth is not processed.

Does what the raximport.pth line does: when RAX_ENABLE is 1, true, yes or on (any case), import
raximport._autoload, which installs the import hook (options from RAX_* variables and
pyproject.toml) and runs the main script rewritten. With RAX_ENABLE unset it costs one dict lookup.

Python imports the first `sitecustomize` it finds on sys.path and no other, so this file would hide
one that is already installed (Debian/Ubuntu ship one, so do some conda and cluster images). It
therefore runs the next `sitecustomize` on sys.path after its own, if there is one. See README.md.
"""

import os
import sys


def _enable_raximport() -> None:
    if os.environ.get("RAX_ENABLE", "").strip().lower() not in ("1", "true", "yes", "on"):
        return
    try:
        __import__("raximport._autoload")  # a no-op when raximport.pth has imported it already
    except ImportError as exc:
        sys.stderr.write(f"sitecustomize: RAX_ENABLE is set but raximport cannot be imported: {exc}\n")


def _run_shadowed_sitecustomize() -> None:
    """Execute the sitecustomize that this one hides, the first one after our own directory."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    later = [p for p in sys.path if isinstance(p, str) and os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", later)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["_sitecustomize_shadowed"] = module


_enable_raximport()
_run_shadowed_sitecustomize()
del _enable_raximport, _run_shadowed_sitecustomize
