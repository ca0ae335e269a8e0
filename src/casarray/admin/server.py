"""The admin server's life cycle: read the token, bind `admin.listen`, serve the API, close.

It runs on the balancer's own event loop (one process, no threads): the API reads the Control between
two data-plane callbacks. Its settings are read once at start; a reload does not move or re-key it
(change admin: and restart).
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from casarray.admin.api import AdminApi
from casarray.admin.auth import Policy, is_loopback_host, split_listen
from casarray.config.model import Admin
from casarray.engine.control import Control
from casarray.errors import StartupError

if TYPE_CHECKING:
    from casarray.admin.peers import Peers

__all__ = ["AdminServer", "read_token"]

log = logging.getLogger("casarray.admin")


def read_token(path: str, setting: str = "admin.token_file") -> str:
    """The token file's content, white space around it stripped (an editor's final newline is not part
    of the token). An unreadable or empty file is a start-up error naming `setting`, never "no token"."""
    file = Path(path)
    try:
        token = file.read_text(encoding="utf-8").strip()
        mode = file.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(
            f"cannot read the token file {path!r}: {detail}",
            setting,
            "create it with one line, e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`",
        ) from None
    if not token:
        raise StartupError(f"the token file {path!r} is empty", setting, "write a token into it")
    # Group access is how the service user (or an admins group) reads a root-owned file; world access
    # hands the token to every local account.
    if mode & stat.S_IRWXO:
        log.warning("%s: the token file %s can be read by every user (chmod o-rwx it)", setting, path)
    return token


class AdminServer:
    """`await start()`, then `.url`; `await close()` ends streams and stops listening."""

    def __init__(
        self,
        control: Control,
        host: str,
        port: int,
        policy: Policy,
        *,
        stream_interval: float = 1.0,
        max_streams: int = 16,
        peers: Peers | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.policy = policy
        self.api = AdminApi(
            control, policy, stream_interval=stream_interval, max_streams=max_streams, peers=peers
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @classmethod
    def from_config(cls, admin: Admin, control: Control, peers: Peers | None = None) -> AdminServer:
        """Validate `admin:` and read the token file; raises StartupError before anything is bound."""
        try:
            host, port = split_listen(admin.listen)
        except ValueError as exc:
            raise StartupError(str(exc), "admin.listen") from None
        token = read_token(admin.token_file) if admin.token_file is not None else None
        return cls(
            control,
            host,
            port,
            Policy(loopback=is_loopback_host(host), token=token),
            max_streams=admin.max_streams,
            peers=peers,
        )

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the admin server is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        # access_log=None: the dashboard polls every second; the log keeps changes and refusals only.
        runner = web.AppRunner(self.api.application(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror or exc}",
                "admin.listen",
                "is another process using the port, or is the address not local?",
            ) from None
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else self.requested_port
        policy = self.policy
        if policy.token is None and not policy.loopback:
            log.error(
                "admin: %s is not a loopback address and admin.token_file is not set: every request is "
                "refused until a token file is configured",
                self.url,
            )
        elif policy.token is None:
            log.warning(
                "admin: no admin.token_file: any local process may drain, maint or reload (set a token "
                "file on a shared machine)"
            )
        log.info(
            "admin API and dashboard on %s (token required for %s)",
            self.url,
            "everything" if not policy.loopback else "changes" if policy.token else "nothing",
        )

    async def close(self) -> None:
        self.api.closing.set()  # lets the event streams finish their response instead of being cut
        self.api.stream_refusals.flush()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
