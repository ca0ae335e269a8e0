"""The namespace toolkit: move every Exchange server's client-access URLs to one name, offline.

    collector.py  the read-only PowerShell (collector.ps1) that writes the inventory JSON
    inventory.py  load that JSON, in every shape ConvertTo-Json writes, into frozen records
    names.py      the DNS-name check applied to every namespace before use
    plan.py       per server and setting: current -> target, "change" or "ok"
    script.py     the plan as an idempotent apply script and its rollback
    powershell.py quoting of every value written into a script
    verify.py     is everything on the namespace? (the plan with nothing to change)
    dns.py        the A/AAAA/CNAME/SRV records for the namespace, as zone lines and cmdlets

Nothing here touches the network or an Exchange server: the scripts are run by an administrator in the
Exchange Management Shell, and their output (a new inventory) comes back here to be verified.
"""
