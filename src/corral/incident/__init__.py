"""Incident investigation runs: an incident source, its read-only upstream tools, and the loopback fakes."""
