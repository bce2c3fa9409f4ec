"""Outbound callbacks: the outbox relay, delivery workers, Standard Webhooks
signing, the retry schedule, fault profiles and the conformance report."""
