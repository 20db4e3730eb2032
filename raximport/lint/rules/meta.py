"""The engine's own codes: RAX000 (a file that does not parse) and RAX100 (an unused `# noqa`)."""

from __future__ import annotations

from collections.abc import Iterator

from raximport.lint.registry import Finding, rule
from raximport.lint.source import SourceFile


@rule("RAX000", "syntax-error", default=True)
def syntax_error(source: SourceFile) -> Iterator[Finding]:
    """## What it does
    Reports a file that Python cannot parse (or decode), instead of skipping it silently.

    ## Why is this bad?
    No other rule can check it, and Python will refuse to import it.

    ## Example
    ```python
    def step(params, batch)
        ...
    ```

    ## Use instead
    ```python
    def step(params, batch):
        ...
    ```
    RAX000 is reported whatever is selected, unless it is ignored by name.
    """
    try:
        source.tree
    except SyntaxError as exc:
        row = exc.lineno or 1
        line = source.lines[row - 1] if 0 < row <= len(source.lines) else ""
        col = min(max((exc.offset or 1) - 1, 0), len(line))
        yield Finding("RAX000", f"SyntaxError: {exc.msg}", row, col, row, col)
    except ValueError as exc:  # source code string cannot contain null bytes
        yield Finding("RAX000", f"SyntaxError: {exc}", 1, 0, 1, 0)
    except (RecursionError, MemoryError):
        yield Finding("RAX000", "SyntaxError: too deeply nested for Python's parser", 1, 0, 1, 0)


@rule("RAX100", "unused-noqa", default=False)
def unused_noqa(source: SourceFile) -> Iterator[Finding]:
    """## What it does
    Reports a `# noqa: RAXnnn` code that silences nothing on its line (a code of a rule that ran,
    or one that names no rule). Bare `# noqa` and other tools' codes are left alone.

    ## Why is this bad?
    A stale `noqa` hides the next real finding on that line, and misleads the reader.

    ## Example
    ```python
    key = jax.random.key(0)  # noqa: RAX201 reused on purpose
    ```

    ## Use instead
    ```python
    key = jax.random.key(0)
    ```
    The safe fix removes the unused codes (the whole directive if none is left).
    """
    return iter(())  # the engine reports it after the other rules, from what their findings used
