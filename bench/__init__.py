"""Benchmark: the realtime relay against the integration plan's polling design, side by side.

Lives outside the `hitl_relay` package on purpose: the polling baseline is bench code only.
"""
