"""Shared core of crypto-fraud-detection: contracts, settings, the CLI."""

__version__ = "0.1.0"
