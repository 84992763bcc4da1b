"""TAROT domain package for motion."""

__version__ = "0.1.0"
