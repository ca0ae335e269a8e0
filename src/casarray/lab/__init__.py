"""The lab: simulated Exchange servers (sim.py, with mail front ends in sim_mail.py), what each keeps and
answers (client-access settings in settings.py, Autodiscover in autodiscover.py, users and mailboxes in
users.py), their certificates (pki.py) and the runner that starts three of them behind a balancer
(runner.py). See docs/lab.md."""

from __future__ import annotations

from casarray.errors import CasarrayError


class LabError(CasarrayError):
    """The lab or a simulated server could not start (bad certificate, port in use, bad address)."""
