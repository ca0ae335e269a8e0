"""The admin API client `casarray ctl` and the peers share (admin/client.py): each way a call fails is
one reason line, over real loopback sockets — a port nothing listens on, a listener that never
answers, the admin server refusing a token, and an HTTP server that is not an admin API."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from casarray.admin.client import AdminCallError, AsyncAdminClient, call
from tests.support import free_port
from tests.unit.admin.conftest import TOKEN, Running

Start = Callable[..., Running]


def failure(method: str, url: str, token: str | None = None, timeout: float = 5.0) -> AdminCallError:
    with pytest.raises(AdminCallError) as raised:
        call(method, url, token=token, timeout=timeout)
    return raised.value


def test_a_json_object_is_the_answer(start_admin: Start) -> None:
    running = start_admin()
    assert call("GET", running.url + "/api/status", token=None, timeout=5.0)["namespace"] == (
        "outlook.alwayshotcafe.com"
    )
    done = call("POST", running.url + "/api/servers/MB1/drain", token=TOKEN, timeout=5.0, body={"by": "t"})
    assert done["outcome"] == "MB1: drain"
    assert running.control.notes == [("", "t from 127.0.0.1")]  # the body went with it


def test_a_port_nothing_listens_on_does_not_answer() -> None:
    error = failure("GET", f"http://127.0.0.1:{free_port()}/api/status")
    assert (error.kind, error.status) == ("unreachable", None)
    assert str(error) == "does not answer (Connection refused)"


def test_a_listener_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        error = failure("GET", f"http://127.0.0.1:{port}/api/status", timeout=0.3)
    assert (error.kind, error.status) == ("timeout", None)
    assert str(error) == "did not answer within 300ms"


def test_a_refused_token_is_the_status_and_the_apis_error(start_admin: Start) -> None:
    running = start_admin()
    missing = failure("POST", running.url + "/api/servers/MB1/drain")
    assert (missing.kind, missing.status) == ("status", 401)
    assert str(missing).startswith("answered 401 Unauthorized: a bearer token is required for changes")
    wrong = failure("GET", running.url + "/api/status", token="wrong")
    assert str(wrong) == "answered 401 Unauthorized: wrong token (see admin.token_file)"
    unknown = failure("POST", running.url + "/api/servers/MB7/drain", token=TOKEN)
    assert str(unknown) == "answered 404 Not Found: no server 'MB7' (servers: MB1, MB2)"
    assert running.control.calls == []


class _NotAnAdminApi(http.server.BaseHTTPRequestHandler):
    """/broken: 500 with a text body over two lines; anything else: 200 with an HTML page."""

    def do_GET(self) -> None:
        status, body = (500, b"boom\n  at line 2\n") if self.path == "/broken" else (200, b"<html>hi</html>")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAnAdminApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_server_that_is_not_an_admin_api(other_server: str) -> None:
    page = failure("GET", other_server + "/api/status")
    assert (page.kind, page.status) == ("not-json", None)
    assert str(page) == "did not answer a JSON object (is that a casarray admin API?)"
    broken = failure("GET", other_server + "/broken")
    assert (broken.kind, broken.status) == ("status", 500)
    assert str(broken) == "answered 500 Internal Server Error: boom at line 2"  # one line


def test_the_async_client_says_the_same(start_admin: Start) -> None:
    running = start_admin()

    async def calls() -> tuple[str, str, str]:
        client = AsyncAdminClient("wrong", 5.0)
        try:
            reasons = []
            for url in (running.url + "/api/status", f"http://127.0.0.1:{free_port()}/api/status"):
                try:
                    await client.call("GET", url)
                except AdminCallError as exc:
                    reasons.append(str(exc))
            right = AsyncAdminClient(TOKEN, 5.0)
            try:
                answer = await right.call("GET", running.url + "/api/status")
            finally:
                await right.aclose()
            return reasons[0], reasons[1], str(answer["namespace"])
        finally:
            await client.aclose()

    assert asyncio.run(calls()) == (
        "answered 401 Unauthorized: wrong token (see admin.token_file)",
        "does not answer (Connection refused)",
        "outlook.alwayshotcafe.com",
    )
