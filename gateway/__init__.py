"""Kanal: a BPJS Ketenagakerjaan dues payment gateway simulator."""

__version__ = "0.1.0"
