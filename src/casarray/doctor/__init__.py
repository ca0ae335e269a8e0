"""`casarray doctor`: checks of a casarray deployment from the balancer's side, and (`--user`) from a
client's.

    rows.py        one result line (check, target, ok/warn/fail, detail), the verdict on a list of them
                   and its summary per server and per service
    certs.py       X.509 facts without I/O: names a certificate covers, fingerprints, validity, key match
    resolution.py  how the client-facing names resolve (DNS, else the system resolver) and the verdict
    wire.py        the network exchanges: fetch a server's certificate, one request through the VIP, a
                   client's request through the VIP with its log-on (NTLM, Negotiate, Basic)
    checks.py      every check of a config, run concurrently with bounded timeouts → rows
    autodiscover.py  the Autodiscover requests a client sends and what the answers say (POX, v2); no I/O
    discovery.py   where Outlook and a phone look for Autodiscover, which redirects they follow; no I/O
    told.py        judging a URL a client is told; what Test E-mail AutoConfiguration shows; no I/O
    client.py      `--user`: Autodiscover as the clients find it, every URL told judged → a report

Library code returns rows; only the command line prints them.
"""

from __future__ import annotations

from casarray.doctor.checks import run_doctor
from casarray.doctor.rows import Row, Status, Tally, failed, per_server, per_service, summary

__all__ = ["Row", "Status", "Tally", "failed", "per_server", "per_service", "run_doctor", "summary"]
