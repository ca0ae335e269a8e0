"""Operations side of a running balancer: the admin API, the dashboard and Prometheus metrics.

Everything here reads and changes the balancer only through `casarray.engine.control.Control`.
Library code: it logs, never prints or exits (`casarray ctl` is the command-line client).
"""

from casarray.admin.auth import Access, Policy, Verdict, decide
from casarray.admin.server import AdminServer, read_token

__all__ = ["Access", "AdminServer", "Policy", "Verdict", "decide", "read_token"]
