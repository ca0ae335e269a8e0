from __future__ import annotations

import contextlib
import ssl
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from casarray.lab.pki import CertFiles, make_lab_pki
from casarray.lab.sim import SimCas
from tests.support import DOMAIN, NAMESPACE, LoopThread, Proc, casarray, free_port, https_request

SIM_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_lab_pki(tmp_path_factory.mktemp("pki"))


class Lab:
    """Simulated Exchange servers and balancers as real processes on 127.0.0.x."""

    def __init__(self, directory: Path, pki: CertFiles) -> None:
        self.dir = directory
        self.pki = pki
        self.procs: list[Proc] = []
        self.sims: dict[str, tuple[str, int, Proc]] = {}

    def sim(self, name: str, address: str, *extra: str) -> Proc:
        port = free_port(address)
        proc = Proc(
            casarray(
                "sim-cas",
                "--name",
                name,
                "--listen",
                f"{address}:{port}",
                "--domain",
                DOMAIN,
                "--cert",
                str(self.pki.certificate),
                "--key",
                str(self.pki.key),
                *extra,
            ),
            self.dir / f"sim-{name}.log",
        )
        self.procs.append(proc)
        self.sims[name] = (address, port, proc)
        proc.wait_log("listening on")
        return proc

    def sims3(self) -> None:
        for i, address in enumerate(SIM_IPS):
            self.sim(f"MB{i + 1}", address)

    def servers_yaml(self) -> str:
        return "\n".join(
            f"  - {{name: {name}, address: {address}, port: {port}}}"
            for name, (address, port, _) in self.sims.items()
        )

    def config(self, body: str, name: str = "casarray.yaml") -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(body))
        return path

    def balancer(
        self,
        extra: str = "",
        servers: str | None = None,
        port: int | None = None,
        wait: bool = True,
        health: str = "{interval: 200ms, timeout: 1s, rise: 1, fall: 1}",
    ) -> tuple[Proc, int]:
        port = port or free_port()
        text = (
            f"namespace: {NAMESPACE}\nmode: l4\nlisten: {{address: 127.0.0.1, https_port: {port}}}\n"
            f"upstream_tls: {{ca: {self.pki.ca}}}\n"
            f"servers:\n{servers if servers is not None else self.servers_yaml()}\n"
            f"health: {health}\n" + textwrap.dedent(extra)
        )
        if "workers:" not in extra:
            text += "workers: 1\n"  # one process: exact counts, per-process limits; test_workers.py covers N
        path = self.dir / f"balancer-{port}.yaml"
        path.write_text(text)
        proc = Proc(casarray("run", "-c", str(path)), self.dir / f"balancer-{port}.log")
        self.procs.append(proc)
        if wait:
            proc.wait_log("listening on")
        return proc, port

    def control(self, name: str, path: str) -> None:
        from tests.support import https_request

        address, port, _ = self.sims[name]
        resp = https_request(address, port, path, self.pki.ca, method="POST", host=address)
        assert resp.status == 200, resp

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def lab(tmp_path: Path, pki: CertFiles) -> Iterator[Lab]:
    lab = Lab(tmp_path, pki)
    try:
        yield lab
    finally:
        lab.close()


LabFactory = Callable[[], Lab]


USERS = [f"user{i:02d}" for i in range(32)]


class L7Lab:
    def __init__(self, directory: Path, pki: CertFiles, loop: LoopThread) -> None:
        self.dir = directory
        self.pki = pki
        self.loop = loop
        self.sims: dict[str, SimCas] = {}
        self.procs: list[Proc] = []
        self.users_file = directory / "ntlm-users.txt"
        self.users_file.write_text("".join(f"CORP:{u}:Pass-{u}\n" for u in USERS))

    def start_sims(self, n: int = 3, ntlm: bool = False) -> None:
        for i in range(1, n + 1):
            sim = SimCas(
                f"MB{i}",
                certificate=self.pki.certificate,
                key=self.pki.key,
                host=f"127.0.0.{i + 1}",
                ntlm_users=self.users_file if ntlm else None,
            )
            self.loop.run(sim.start())
            self.sims[sim.name] = sim

    def balancer(
        self,
        extra: str = "",
        servers: str | None = None,
        health: str = "{interval: 200ms, timeout: 1s, rise: 1, fall: 1}",
        http_port: int | None = None,
        tls: str | None = None,
        mode: str = "l7",
        ca: Path | None = None,
    ) -> tuple[Proc, int]:
        """`casarray run` in front of the sims: l7 (TLS terminated and re-encrypted) or l4 (TLS passes
        through). The config file is the process's last argument (`proc.args[-1]`)."""
        port = free_port()
        http = f", http_port: {http_port}" if http_port else ""
        servers = (
            servers
            if servers is not None
            else "\n".join(
                f"  - {{name: {s.name}, address: {s.host}, port: {s.port}}}" for s in self.sims.values()
            )
        )
        listener_tls = tls or f"{{certificate: {self.pki.certificate}, key: {self.pki.key}}}"
        text = (
            f"namespace: {NAMESPACE}\nautodiscover: autodiscover.alwayshotcafe.com\nmode: {mode}\n"
            f"listen: {{address: 127.0.0.1, https_port: {port}{http}}}\n"
            + (f"tls: {listener_tls}\n" if mode == "l7" else "")
            + f"upstream_tls: {{ca: {ca or self.pki.ca}}}\nhealth: {health}\nservers:\n"
            + servers
            + "\n"
            + textwrap.dedent(extra)
        )
        if "workers:" not in extra:
            text += "workers: 1\n"
        path = self.dir / f"{mode}-{port}.yaml"
        path.write_text(text)
        proc = Proc(casarray("run", "-c", str(path)), self.dir / f"{mode}-{port}.log")
        self.procs.append(proc)
        proc.wait_log("listening on")
        return proc, port

    def recorded(self) -> int:
        return sum(len(s.state.requests) for s in self.sims.values())

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for sim in self.sims.values():
            self.loop.run(sim.stop())


L = TypeVar("L", bound=L7Lab)


@contextlib.contextmanager
def in_loop(cls: type[L], directory: Path, pki: CertFiles) -> Iterator[L]:
    """A lab whose simulated servers run on a loop thread; everything is stopped afterwards."""
    loop = LoopThread()
    lab = cls(directory, pki, loop)
    try:
        yield lab
    finally:
        lab.close()
        loop.close()


@pytest.fixture
def l7(tmp_path: Path, pki: CertFiles) -> Iterator[L7Lab]:
    with in_loop(L7Lab, tmp_path, pki) as lab:
        yield lab


def get(lab: L7Lab, port: int, path: str, **kw: Any) -> Any:
    return https_request("127.0.0.1", port, path, lab.pki.ca, **kw)


def session(lab: L7Lab, port: int) -> requests.Session:
    """A requests session that connects to the balancer for the namespace (like curl --resolve)."""
    from requests.adapters import HTTPAdapter

    class Resolve(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ssl.create_default_context(cafile=str(lab.pki.ca))
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.connection_pool_kw["server_hostname"] = NAMESPACE
            self.poolmanager.connection_pool_kw["assert_hostname"] = NAMESPACE

    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment must not interfere
    s.mount("https://", Resolve())
    s.headers["Host"] = NAMESPACE
    s.base_url = f"https://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return s
