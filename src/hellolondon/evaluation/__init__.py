"""Evaluation of a trained checkpoint: held-out loss and bits-per-byte (`heldout`), historical
knowledge probes (`probes`), generation quality (`generation`), and the report that gathers
them and is logged to the run's tracker (`report`)."""

from hellolondon.evaluation.suite import evaluate, summary_text, write_report

__all__ = ["evaluate", "summary_text", "write_report"]
