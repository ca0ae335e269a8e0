"""The namespace procedure on the lab's servers, with the very scripts an administrator runs:

    collector script (casarray namespace collector)  ->  inventory file
    plan (casarray namespace plan)                   ->  apply and rollback scripts (namespace script)
    apply script, run by the lab's shell             ->  every vdir, Outlook Anywhere and the SCP moved

`casarray lab` does this at start (unless --as-installed) so that the default lab is configured as the
seed's procedure leaves an organisation; `casarray lab inventory` and `casarray lab apply` are the same
steps by hand (docs/lab.md). Blocking: the runner calls it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from casarray.config import Config, load_config
from casarray.exchange.namespace.collector import collector_script
from casarray.exchange.namespace.inventory import Inventory, load_inventory
from casarray.exchange.namespace.plan import Targets, make_plan
from casarray.exchange.namespace.script import apply_script, rollback_script, write_script
from casarray.lab.ems import run_script
from casarray.lab.powershell import ScriptError

Say = Callable[[str], None]

COLLECTOR_NAME = "casarray-collector.ps1"  # how an error names the collector (it runs from memory)
INSTALLED_INVENTORY = "inventory-installed.json"
APPLY_SCRIPT = "namespace-apply.ps1"
ROLLBACK_SCRIPT = "namespace-rollback.ps1"


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply_namespace` left in the lab directory, and what its run printed last."""

    inventory: Path
    apply: Path
    rollback: Path
    changes: int
    summary: str


def take_inventory(config: Config, path: Path, say: Say) -> Inventory:
    """Run the collector against the servers of `config`; the inventory it wrote to `path`."""
    outcome = run_script(collector_script(), COLLECTOR_NAME, config, say, arguments={"Path": str(path)})
    if not outcome.ok:
        raise ScriptError(f"{len(outcome.errors)} error(s): {outcome.errors[0]}", where=COLLECTOR_NAME)
    return load_inventory(path)


def apply_namespace(config_path: Path, directory: Path, targets: Targets, say: Say) -> Applied:
    """Collect, plan, write the scripts into `directory` and run the apply script; ScriptError (or
    InventoryError) when a step fails. Lines the scripts print go to `say`."""
    config = load_config(config_path)
    inventory_path = directory / INSTALLED_INVENTORY
    inventory = take_inventory(config, inventory_path, say)
    plan = make_plan(inventory, targets)
    apply_path, rollback_path = directory / APPLY_SCRIPT, directory / ROLLBACK_SCRIPT
    write_script(apply_path, apply_script(plan, inventory))
    write_script(rollback_path, rollback_script(plan, inventory))
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        say(line)

    outcome = run_script(
        apply_path.read_text(encoding="utf-8-sig"),
        apply_path.name,
        config,
        keep,
        script_root=str(directory.resolve()),
    )
    if not outcome.ok:
        raise ScriptError(f"{len(outcome.errors)} error(s): {outcome.errors[0]}", where=apply_path.name)
    summary = next((line for line in reversed(lines) if line.endswith("already as wanted.")), "")
    return Applied(inventory_path, apply_path, rollback_path, len(plan.changes), summary)
