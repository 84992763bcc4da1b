"""TAROT domain package for llm."""

__version__ = "0.1.0"
