"""check_real_scripts.py's start-up hook for the programs it runs (plain and under raximport).

On PYTHONPATH ahead of everything else, so Python imports it at start-up:

- seeds Python's and numpy's global random generators (RAXCHECK_SEED), so that scripts drawing
  from np.random without a seed of their own print the same numbers in every run;
- counts XLA compiles: a jax.monitoring listener appends one line per
  `/jax/core/compile/backend_compile_duration` event (one per program compiled or loaded from
  the persistent cache) and per persistent-cache hit to the file RAXCHECK_COMPILE_LOG.

It never imports JAX itself: raximport must set up JAX's environment before JAX starts. The
listener is registered from an audit hook on `import`, as soon as jax._src.monitoring exists.
A sitecustomize this one shadows (the interpreter's own, if any) is run afterwards.
"""

import os
import sys


def _seed() -> None:
    seed = os.environ.get("RAXCHECK_SEED")
    if seed is None:
        return
    import random

    random.seed(int(seed))
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(int(seed))


def _compile_counter() -> None:
    path = os.environ.get("RAXCHECK_COMPILE_LOG")
    if not path:
        return
    state = {"done": False}
    compile_event = "/jax/core/compile/backend_compile_duration"
    hit_event = "/jax/compilation_cache/cache_hits"

    def write(line: str) -> None:
        # one append per event: nothing is lost if the program ends with os._exit or a crash
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def on_duration(event, duration, **kwargs):
        if event == compile_event:
            write(f"compile {kwargs.get('fun_name', '?')} {duration:.6f}")

    def on_event(event, **kwargs):
        if event == hit_event:
            write("cache_hit")

    def audit(event, args):
        if state["done"] or event != "import":
            return
        monitoring = sys.modules.get("jax._src.monitoring")
        if monitoring is None:
            return
        register_duration = getattr(monitoring, "register_event_duration_secs_listener", None)
        register_event = getattr(monitoring, "register_event_listener", None)
        if register_duration is None or register_event is None:
            return  # still executing: the next import will find it complete
        state["done"] = True
        register_duration(on_duration)
        register_event(on_event)

    sys.addaudithook(audit)


def _chain() -> None:
    """Run the sitecustomize this one shadows, if there is one further down sys.path."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or os.path.abspath(spec.origin or "") == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_compile_counter()
_seed()
_chain()
