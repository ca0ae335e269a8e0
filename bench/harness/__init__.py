"""Helpers for bench/run.py: processes, the load generator, suites, reports.

Not part of the casarray package and not a test suite: it starts real binaries (nginx, HAProxy, wrk,
casarray) on 127.0.0.1 and measures them.
"""
