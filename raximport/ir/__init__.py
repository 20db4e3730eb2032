"""The IR of compiled functions: captured from real runs (`--dump-ir`, capture.py) or synthesised
as a dataset (`rax ir generate`), in one record schema (record.py). Imports nothing on its own."""
