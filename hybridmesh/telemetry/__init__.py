"""Metric names, flow records, tap and access log."""
