"""The dashboard in headless Chromium (Debian's chromium + chromium-driver, driven by selenium) against
a real `casarray run` with simulated Exchange servers: it lists the servers, turns a failed server red
within the check window, and its Drain button changes the state it shows and the API's."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from casarray.lab.pki import CertFiles
from casarray.lab.sim import SimCas
from tests.support import NAMESPACE, LoopThread, Proc, casarray, free_port, https_request, wait_until

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

TOKEN = "browser-token-9c1e"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Root in a container: no sandbox; nothing may reach out (updates, sync, first-run pages).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


def _binaries() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver_path = _binaries()
    options = Options()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium must not try to download one (nothing but loopback is reachable).
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def array(tmp_path: Path, pki: CertFiles) -> Iterator[dict[str, Any]]:
    """Three simulated servers behind `casarray run` (l7) with the admin API on loopback."""
    loop = LoopThread()
    sims: dict[str, SimCas] = {}
    proc: Proc | None = None
    try:
        for i in range(1, 4):
            sim = SimCas(f"MB{i}", certificate=pki.certificate, key=pki.key, host=f"127.0.0.{i + 1}")
            loop.run(sim.start())
            sims[sim.name] = sim
        token_file = tmp_path / "admin.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        port, admin_port = free_port(), free_port()
        servers = "\n".join(
            f"  - {{name: {s.name}, address: {s.host}, port: {s.port}}}" for s in sims.values()
        )
        config = tmp_path / "casarray.yaml"
        config.write_text(
            textwrap.dedent(f"""\
            namespace: {NAMESPACE}
            mode: l7
            listen: {{address: 127.0.0.1, https_port: {port}}}
            tls: {{certificate: {pki.certificate}, key: {pki.key}}}
            upstream_tls: {{ca: {pki.ca}}}
            health: {{interval: 200ms, timeout: 1s, rise: 1, fall: 1}}
            workers: 2
            admin: {{listen: '127.0.0.1:{admin_port}', token_file: {token_file}}}
            servers:
            """)
            + servers
            + "\n"
        )
        proc = Proc(casarray("run", "-c", str(config)), tmp_path / "run.log")
        proc.wait_log("admin API and dashboard on")
        yield {"sims": sims, "port": port, "admin": f"http://127.0.0.1:{admin_port}", "ca": pki.ca}
    finally:
        if proc is not None:
            proc.stop()
        for sim in sims.values():
            loop.run(sim.stop())
        loop.close()


def cell_classes(driver: WebDriver, server: str) -> set[str]:
    cells = driver.find_elements(By.CSS_SELECTOR, f'tr[data-server="{server}"] td.cell')
    return {c.get_attribute("class") or "" for c in cells}


def operator_text(driver: WebDriver, server: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'tr[data-server="{server}"] td.operator').text)


def test_dashboard_shows_states_live_and_drains(browser: WebDriver, array: dict[str, Any]) -> None:
    driver = browser
    for _ in range(6):  # some traffic, so the counters have something to show
        https_request("127.0.0.1", array["port"], "/owa/", array["ca"])
    driver.get(array["admin"] + "/")
    wait_until(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "tr[data-server]")) == 3,
        10,
        what="three server rows",
    )
    rows = [r.get_attribute("data-server") for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-server]")]
    assert rows == ["MB1", "MB2", "MB3"]
    wait_until(lambda: cell_classes(driver, "MB2") == {"cell state-up"}, 10, what="MB2 all up")
    assert driver.find_element(By.ID, "namespace").text == NAMESPACE
    assert driver.find_element(By.ID, "live").text == "live"

    # The whole server fails its checks: every cell of its row turns red within the check window.
    array["sims"]["MB2"].state.server_up = False
    wait_until(lambda: cell_classes(driver, "MB2") == {"cell state-down"}, 5, what="MB2 turning red")
    assert cell_classes(driver, "MB1") == {"cell state-up"}
    log = driver.find_element(By.ID, "events-body").text
    assert "MB2/owa" in log
    assert "up → down" in log

    # Drain from the page: the first click asks for the token, then the action goes through.
    driver.find_element(By.CSS_SELECTOR, 'tr[data-server="MB1"] button[data-action="drain"]').click()
    wait_until(lambda: driver.find_element(By.ID, "token-bar").is_displayed(), 5, what="the token prompt")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "token-save").click()
    wait_until(lambda: operator_text(driver, "MB1") == "drain", 5, what="MB1 shown as drain")
    wait_until(lambda: cell_classes(driver, "MB1") == {"cell state-drain"}, 5, what="MB1 cells amber")
    assert driver.find_element(By.ID, "message").text == "MB1: drain"
    with httpx.Client(base_url=array["admin"], trust_env=False, timeout=5) as http:
        mb1 = next(s for s in http.get("/api/status").json()["servers"] if s["name"] == "MB1")
    assert mb1["operator"] == "drain"
    # The token is kept for the tab: a second action needs no prompt.
    driver.find_element(By.CSS_SELECTOR, 'tr[data-server="MB3"] button[data-action="maint"]').click()
    wait_until(lambda: operator_text(driver, "MB3") == "maint", 5, what="MB3 shown as maint")
    assert not driver.find_element(By.ID, "token-bar").is_displayed()

    for _ in range(4):
        https_request("127.0.0.1", array["port"], "/owa/", array["ca"])  # MB2 down, MB1/MB3 out: 503s
    wait_until(lambda: "5xx" in driver.find_element(By.ID, "summary").text, 5, what="5xx in the summary")
    # Clicking scrolled the grid to the buttons: back to the start for a picture a person can read.
    driver.execute_script("window.scrollTo(0, 0); document.querySelector('.scroll').scrollLeft = 0")
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    errors = [
        entry["message"]
        for entry in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if entry["level"] == "SEVERE" and "status of 401" not in entry["message"]
    ]
    assert errors == []  # no script error, nothing blocked by the Content-Security-Policy


def test_actions_are_visible_at_1280_px_and_a_reason_shows(browser: WebDriver, array: dict[str, Any]) -> None:
    driver = browser
    driver.set_window_size(1280, 900)
    with httpx.Client(base_url=array["admin"], trust_env=False, timeout=5) as http:
        answer = http.post(
            "/api/servers/MB2/drain",
            json={"reason": "CU14", "by": "alice"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 200, answer.text
    driver.get(array["admin"] + "/")
    wait_until(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "tr[data-server]")) == 3,
        10,
        what="three server rows",
    )
    wait_until(lambda: operator_text(driver, "MB2").startswith("drain"), 5, what="MB2 shown as drain")
    width = driver.execute_script("return window.innerWidth")
    assert width <= 1280
    # Every action of every row is on screen without scrolling anything sideways.
    for button in driver.find_elements(By.CSS_SELECTOR, "tr[data-server] button[data-action]"):
        rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", button)
        assert button.is_displayed()
        assert rect["left"] >= 0, rect
        assert rect["right"] <= width, (button.get_attribute("data-action"), rect)
    assert driver.execute_script("return document.querySelector('.scroll').scrollLeft") == 0
    assert operator_text(driver, "MB2") == "drain\nCU14"  # the reason under the badge
    title = driver.find_element(By.CSS_SELECTOR, 'tr[data-server="MB2"] td.operator').get_attribute("title")
    assert "by alice from 127.0.0.1: CU14" in str(title)
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "dashboard-1280.png"))
