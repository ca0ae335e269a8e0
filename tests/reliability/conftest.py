"""The reliability suite: each promise of docs/reliability.md proven over real TLS on loopback.

It reuses the integration labs (simulated Exchange servers, balancer processes, the lab CA)."""

from __future__ import annotations

from tests.integration.conftest import l7, lab, pki

__all__ = ["l7", "lab", "pki"]
