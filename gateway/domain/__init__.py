"""Kanal's pure domain: dues rules, periods, coverage states and identifiers (no I/O)."""
