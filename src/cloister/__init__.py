"""Cloister: confidential, verifiable AI on attested compute."""

__version__ = "0.1.0"
