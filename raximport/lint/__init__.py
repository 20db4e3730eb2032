"""`rax lint`: the JAX checklist as fast static checks, in Ruff's conventions (codes RAXnnn,
`# noqa`, select/ignore, concise/full/json/github/sarif output, `--fix`)."""
