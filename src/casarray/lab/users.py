"""The simulated organisation's users: who may sign in (NTLM, Basic, mail log-ins) and which mailboxes
exist (Autodiscover). One file, `DOMAIN:user:password` lines (pyspnego's NTLM_USER_FILE format), is
the single list: user `alice` of that file signs in as `alice`, `DOMAIN\\alice` or
`alice@<domain>` and has the mailbox `alice@<domain>`.

pyspnego's NTLM acceptor matches the user and domain names of the AUTHENTICATE message against its
store as they are: a client that logs on with the UPN (Outlook sends what the user typed) names the
user `alice@<domain>` and an empty domain ([MS-NLMP] 2.2.1.3, 3.3.2: NTOWFv2 is computed over exactly
those names). `Credentials.ntlm_store` therefore lists every name a user may give, each as the
acceptor will look it up, and the server maps the principal it accepted back to `DOMAIN\\user`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from casarray.lab import LabError
from casarray.lab.pki import DEFAULT_DOMAIN

# Mailbox GUIDs are made from the address, so every simulated server tells a client the same ones.
_MAILBOX_NAMESPACE = uuid.UUID("6f1c4d52-35a5-4c1b-9a52-8c0f3e6b2a10")


def check_user_file(path: Path) -> None:
    """The users file holds `DOMAIN:user:password` lines (pyspnego's NTLM_USER_FILE format)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LabError(f"cannot read the NTLM users file: {exc.strerror or exc}", str(path)) from exc
    users = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#") and line.count(":") < 2:
            raise LabError(f"line {number}: expected DOMAIN:user:password", str(path))
    if not users:
        raise LabError("no users in the NTLM users file", str(path), "add DOMAIN:user:password lines")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox of the simulated organisation."""

    address: str  # alice@alwayshotcafe.com, lower case
    display_name: str  # alice

    @property
    def guid(self) -> uuid.UUID:
        """The mailbox GUID Exchange 2013+ gives Outlook as the server (`<guid>@<domain>`)."""
        return uuid.uuid5(_MAILBOX_NAMESPACE, self.address)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


class Credentials:
    """Who may log in: `DOMAIN:user:password` lines (the sim's NTLM users file). A user may name
    themselves `user`, `DOMAIN\\user` or `user@<domain>`, as Exchange accepts. Without users, any name
    and password are accepted (a lab without accounts) and every address in the domain is a mailbox."""

    def __init__(self, users: Sequence[tuple[str, str, str]] = (), domain: str = DEFAULT_DOMAIN) -> None:
        self.domain = domain.lower()
        self._passwords: dict[str, str] = {}
        self._logons: dict[str, str] = {}  # any name a user may give → DOMAIN\user
        self._mailboxes: dict[str, Mailbox] = {}
        self._users = tuple(users)
        for netbios, user, password in users:
            for name in (user, f"{netbios}\\{user}", f"{user}@{domain}"):
                self._passwords[name.lower()] = password
                self._logons[name.lower()] = f"{netbios}\\{user}"
            address = f"{user}@{domain}".lower()
            self._mailboxes[address] = Mailbox(address, user)

    @classmethod
    def from_file(cls, path: Path, domain: str = DEFAULT_DOMAIN) -> Credentials:
        check_user_file(path)
        users: list[tuple[str, str, str]] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                netbios, user, password = line.strip().split(":", 2)
                users.append((netbios, user, password))
        return cls(users, domain)

    @property
    def open(self) -> bool:
        return not self._passwords

    def check(self, user: str, password: str) -> bool:
        if self.open:
            return bool(user)
        return self._passwords.get(user.lower()) == password

    def logon(self, user: str, password: str) -> str | None:
        """`DOMAIN\\user` when `user` (any of its names) and `password` are right, else None."""
        if not self.check(user, password):
            return None
        return user if self.open else self._logons[user.lower()]

    def account(self, name: str) -> str:
        """`DOMAIN\\user` for any of a user's names (what IIS reports as the logon user); `name` itself
        when it is none of them."""
        return self._logons.get(name.lower(), name)

    def ntlm_store(self) -> str:
        """The NTLM acceptor's store (pyspnego's NTLM_USER_FILE, `DOMAIN:user:password` lines): each user
        under `DOMAIN\\user`, and with an empty domain under the UPN and the bare user name, as a client
        sends them ([MS-NLMP] 2.2.1.3)."""
        lines = []
        for netbios, user, password in self._users:
            lines += [
                f"{netbios}:{user}:{password}",
                f":{user}@{self.domain}:{password}",
                f":{user}:{password}",
            ]
        return "".join(f"{line}\n" for line in lines)

    def mailbox(self, address: str) -> Mailbox | None:
        """The mailbox with this SMTP address (any case), or None when there is none."""
        address = address.strip().lower()
        local, at, domain = address.rpartition("@")
        if not at or not local or domain != self.domain:
            return None
        if self.open:
            return Mailbox(address, local)
        return self._mailboxes.get(address)
