"""The lab: simulated Exchange servers (sim.py), their certificates (pki.py) and the runner that starts
three of them behind a balancer (runner.py). See docs/lab.md."""

from __future__ import annotations

from casarray.errors import CasarrayError


class LabError(CasarrayError):
    """The lab or a simulated server could not start (bad certificate, port in use, bad address)."""
