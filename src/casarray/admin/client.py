"""One request to a casarray admin API, as `casarray ctl` and the peers (admin/peers.py) make it: the
bearer token, a bound on the time, no proxy taken from the environment (an http_proxy meant for the
internet must not capture calls to a balancer), and every failure as one `AdminCallError` whose text
says what happened in one line, for the caller to put after whom it asked ("the admin API at …",
a peer's URL). `casarray ctl health` asks on its own (cli/health.py: its fast path does without httpx).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import httpx

from casarray.config.units import format_duration
from casarray.errors import reason_of

__all__ = ["AdminCallError", "AsyncAdminClient", "call"]

Kind = Literal["unreachable", "timeout", "failed", "status", "not-json"]


class AdminCallError(Exception):
    """The admin API did not answer, answered an error status, or did not answer a JSON object.
    `str()` is the reason without the subject ("does not answer (Connection refused)", "answered 401
    Unauthorized: wrong token"); `kind` and `status` let the caller add a hint of its own."""

    def __init__(self, kind: Kind, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.kind: Kind = kind
        self.status = status  # the HTTP status of an error answer


def call(
    method: str, url: str, *, token: str | None, timeout: float, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`method url` (the API's address and the path) with the bearer `token` (if any) and the JSON
    `body` (if any), within `timeout` seconds: the JSON object answered, or AdminCallError."""
    with _reasons(timeout), httpx.Client(**_options(token, timeout)) as client:
        response = client.request(method, url, json=body)
    return _answer(response)


class AsyncAdminClient:
    """`call` for a server that asks other nodes again and again: one connection pool, kept until
    `aclose`."""

    def __init__(self, token: str | None, timeout: float) -> None:
        self.timeout = timeout
        self._client = httpx.AsyncClient(**_options(token, timeout))

    async def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with _reasons(self.timeout):
            response = await self._client.request(method, url, json=body)
        return _answer(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _options(token: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"headers": headers, "timeout": timeout, "trust_env": False}


@contextlib.contextmanager
def _reasons(timeout: float) -> Iterator[None]:
    """httpx's errors as AdminCallError."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise AdminCallError("unreachable", f"does not answer ({reason_of(exc)})") from None
    except httpx.TimeoutException:
        raise AdminCallError("timeout", f"did not answer within {format_duration(timeout)}") from None
    except httpx.HTTPError as exc:
        raise AdminCallError("failed", f"failed: {reason_of(exc)}") from None


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; an error status with the API's `error` (else the start of the
    body) in one line."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        said = " ".join(str(error or response.text.strip()[:200]).split())
        status = f"{response.status_code} {response.reason_phrase}"
        raise AdminCallError("status", f"answered {status}: {said}", response.status_code)
    if not isinstance(data, dict):
        raise AdminCallError("not-json", "did not answer a JSON object (is that a casarray admin API?)")
    return data
