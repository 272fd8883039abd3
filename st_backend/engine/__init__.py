"""The packed engine: token batches, the packed forward, heads and outputs in the caller's order. It knows no
sentence-transformers class (checked by import-linter in CI; see ARCHITECTURE.md)."""
