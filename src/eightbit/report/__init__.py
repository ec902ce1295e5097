"""Measurements and their presentation: agreement metrics, latency, tables, JSON."""
