"""TAROT: targeted data selection via optimal transport."""

__version__ = "0.1.0"
