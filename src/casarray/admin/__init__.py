"""Operations side of a running balancer: the admin API, the dashboard and Prometheus metrics.

Everything here reads and changes the balancer only through `casarray.engine.control.Control`.
Library code: it logs, never prints or exits (`casarray ctl` is the command-line client). Import the
module needed (admin.server, admin.client, …): this package imports none of them, so `casarray ctl`
does not load the server it talks to.
"""
