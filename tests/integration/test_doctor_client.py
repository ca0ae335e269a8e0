"""`doctor --user` over real sockets: a client's log-on through the balancer (doctor/wire.py `fetch`)
against the simulated servers' NTLM acceptor, with Extended Protection."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from casarray.doctor.wire import Credentials, Fetched, fetch, offered_schemes
from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas, parse_description
from tests.integration.conftest import L7Lab, in_loop
from tests.support import NAMESPACE


def start_sims(lab: L7Lab, *, extended_protection: bool) -> None:
    for i in range(1, 4):
        sim = SimCas(
            f"MB{i}",
            certificate=lab.pki.certificate,
            key=lab.pki.key,
            host=f"127.0.0.{i + 1}",
            ntlm_users=lab.users_file,
            extended_protection=extended_protection,
        )
        lab.loop.run(sim.start())
        lab.sims[sim.name] = sim


@pytest.mark.parametrize("mode", ["l4", "l7"])
def test_a_client_logs_on_with_ntlm_bound_to_the_tls_channel(
    tmp_path: Path, pki: CertFiles, mode: str
) -> None:
    """The check logs on as Outlook does: NTLM on one connection, the channel binding of the certificate
    it saw (Extended Protection), through either mode; a wrong password is a refusal, not an error."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    with in_loop(L7Lab, tmp_path, pki) as lab:
        start_sims(lab, extended_protection=True)
        _, port = lab.balancer(mode=mode)

        def get(credentials: Credentials | None) -> Fetched:
            return asyncio.run(
                fetch(
                    "127.0.0.1",
                    port,
                    NAMESPACE,
                    "GET",
                    "/EWS/Exchange.asmx",
                    context,
                    10.0,
                    credentials=credentials,
                )
            )

        anonymous = get(None)
        assert anonymous.reply is not None
        assert anonymous.reply.status == 401
        assert offered_schemes(anonymous.reply.all("WWW-Authenticate")) == ["NTLM", "Negotiate"]
        assert anonymous.auth is None
        assert not anonymous.refused

        good = get(Credentials("CORP\\user07", "Pass-user07"))
        assert good.reply is not None, good
        assert (good.reply.status, good.auth, good.refused) == (200, "NTLM", False)
        assert parse_description(good.reply.body.decode())["user"] == "CORP\\user07"
        assert good.reply.fe_server in {"MB1", "MB2", "MB3"}

        wrong = get(Credentials("CORP\\user07", "not-the-password"))
        assert wrong.reply is not None
        assert wrong.reply.status == 401
        assert (wrong.auth, wrong.refused) == ("NTLM", True)

        unknown = get(Credentials("nobody@alwayshotcafe.com", "whatever"))
        assert unknown.refused
