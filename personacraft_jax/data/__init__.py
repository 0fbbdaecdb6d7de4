"""Input pipeline: per-example model inputs from the stored fields, and the grain loader."""
