"""gpt/ is a folder of scripts that import each other as top-level modules, like nanoGPT."""

import sys
from pathlib import Path

GPT_DIR = Path(__file__).resolve().parents[2] / "gpt"
if str(GPT_DIR) not in sys.path:
    sys.path.insert(0, str(GPT_DIR))

import data  # noqa: E402  (gpt/ is on sys.path from here on)
import pytest  # noqa: E402

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n"
) * 40


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    text = root / "input.txt"
    text.write_text(TEXT)
    data.prepare("shakespeare_char", root, input_path=text)
    return root


@pytest.fixture(scope="package", autouse=True)
def shared_xla_cache(tmp_path_factory):
    """One XLA persistent compilation cache for this package, in this process and its
    subprocesses: they compile the same tiny-config programs again and again, and compiling is
    most of their time (a hooked train+sample subprocess: 82 s cold, 18 s warm). Package-scoped
    and undone after (JAX's cache state reset too), so the raximport tests that follow, whose
    subject is who owns that setting, start as a fresh process would."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    directory = tmp_path_factory.getbasetemp() / "xla-cache"  # the same one if the package comes back
    directory.mkdir(exist_ok=True)  # (an xdist worker may run other tests in between)
    settings = {
        "jax_compilation_cache_dir": str(directory),
        "jax_persistent_cache_min_compile_time_secs": 0.2,
        "jax_compilation_cache_max_size": -1,  # no LRU here: a raximport test before may have left one on
    }
    before = {name: getattr(jax.config, name) for name in settings}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in settings.items():
            mp.setenv(name.upper(), str(value))
            jax.config.update(name, value)
        compilation_cache.reset_cache()  # JAX opens its cache once: in this worker, maybe already
        try:
            yield
        finally:
            for name, value in before.items():
                jax.config.update(name, value)
            compilation_cache.reset_cache()
