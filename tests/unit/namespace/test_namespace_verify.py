"""Verify: passes only when every managed setting is on the namespace."""

from __future__ import annotations

from collections.abc import Callable

from casarray.exchange.namespace.inventory import Inventory
from casarray.exchange.namespace.plan import Targets
from casarray.exchange.namespace.verify import verify

NS = "outlook.alwayshotcafe.com"


def test_unified_inventory_passes(inventory: Callable[[str], Inventory]) -> None:
    result = verify(inventory("unified.json"), Targets.build(NS))
    assert result.ok
    assert result.failures == ()
    # The Autodiscover vdir's URLs, and PowerShell's unless asked, are listed but not checked.
    unchecked = [c for c in result.checks if c.expected is None]
    assert {c.kind for c in unchecked} == {"Autodiscover", "PowerShell"}
    assert all(c.ok for c in unchecked)


def test_fresh_server_fails_with_reasons(inventory: Callable[[str], Inventory]) -> None:
    result = verify(inventory("one-server.json"), Targets.build(NS))
    assert not result.ok
    reasons = {(c.kind, c.property): c.reason for c in result.failures}
    assert reasons[("Owa", "InternalUrl")] == (
        f"on mb1.alwayshotcafe.com, not {NS} (should be https://{NS}/owa)"
    )
    assert reasons[("Owa", "ExternalUrl")] == f"not set (should be https://{NS}/owa)"
    assert reasons[("OutlookAnywhere", "ExternalHostname")] == f"not set (should be {NS})"
    assert ("ClientAccessService", "AutoDiscoverServiceInternalUri") in reasons
    # 6 vdirs x 2 URLs + 2 host names + the SCP; Autodiscover's and PowerShell's URLs never fail.
    assert len(result.failures) == 15


def test_partly_done_organisation_lists_only_what_is_off(inventory: Callable[[str], Inventory]) -> None:
    result = verify(inventory("eight-servers.json"), Targets.build("mail.contoso.com"))
    assert not result.ok
    assert {c.server for c in result.failures} == {"EX04", "EX05", "EX06", "EX07", "EX08"}
    ex05 = [
        c for c in result.failures if c.server == "EX05" and c.kind == "Owa" and c.property == "ExternalUrl"
    ]
    assert ex05[0].reason.startswith("on webmail.contoso.com, not mail.contoso.com")


def test_wrong_namespace_fails_an_otherwise_unified_inventory(inventory: Callable[[str], Inventory]) -> None:
    result = verify(inventory("unified.json"), Targets.build("mail.alwayshotcafe.com"))
    assert not result.ok
    assert len(result.failures) == 2 * 15


def test_expected_is_the_host(inventory: Callable[[str], Inventory]) -> None:
    result = verify(
        inventory("unified.json"), Targets.build(NS, autodiscover="autodiscover.alwayshotcafe.com")
    )
    scp = [c for c in result.checks if c.kind == "ClientAccessService"]
    assert {c.expected for c in scp} == {"autodiscover.alwayshotcafe.com"}
    assert not any(c.ok for c in scp)
    assert list(scp[0].as_json()) == ["server", "kind", "identity", "property", "current", "expected", "ok"]
