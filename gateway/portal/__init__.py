"""Employer portal: a page served by the gateway for the monthly dues cycle."""
