"""helloLondon: build a historical-English language model from scratch and watch it learn."""

__version__ = "0.1.0"
