"""The corpus: where documents come from (bundled sample, collection, cleaning) and their format."""
