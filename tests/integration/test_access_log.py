"""Access log: one line per l4 connection and per l7 request, JSON or text, reopened on SIGUSR1."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.integration.conftest import L7Lab, Lab, get
from tests.support import https_request, wait_until


def test_l4_connection_lines_in_json(lab: Lab, tmp_path: Path) -> None:
    lab.sims3()
    access = tmp_path / "access.log"
    proc, port = lab.balancer(f"log: {{access: true, format: json, file: {access}}}\n")
    for _ in range(3):
        assert https_request("127.0.0.1", port, "/owa/healthcheck.htm", lab.pki.ca).status == 200
    wait_until(lambda: access.exists() and len(access.read_text().splitlines()) >= 3, what="3 access lines")
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert {line["server"] for line in lines} == {"MB1", "MB2", "MB3"}
    for line in lines:
        assert line["kind"] == "l4"
        assert line["termination"] == "--"
        assert line["bytes_in"] > 0
        assert line["bytes_out"] > 0
        assert line["client"].startswith("127.0.0.1:")
    # logrotate: move the file away, SIGUSR1, new lines go to a new file
    access.rename(tmp_path / "access.log.1")
    proc.signal(signal.SIGUSR1)
    proc.wait_log("access log reopened")
    https_request("127.0.0.1", port, "/owa/healthcheck.htm", lab.pki.ca)
    wait_until(lambda: access.exists() and access.read_text().strip(), what="a line in the reopened log")


def test_l7_request_lines_in_text(l7: L7Lab, tmp_path: Path) -> None:
    l7.start_sims(1)
    access = tmp_path / "access.log"
    _, port = l7.balancer(f"log: {{access: true, file: {access}}}\n")
    assert get(l7, port, "/EWS/Exchange.asmx").status == 200
    assert get(l7, port, "/nope").status == 404
    wait_until(lambda: access.exists() and len(access.read_text().splitlines()) >= 2, what="2 access lines")
    ews, nope = access.read_text().splitlines()
    assert '"GET /EWS/Exchange.asmx" ews MB1 200 ' in ews
    assert ews.endswith(" --")
    assert '"GET /nope" - - 404 ' in nope
    assert nope.endswith(" PR")
