"""DNS host names: the one check every namespace verb applies to a name before it is used.

A namespace ends up in three places that are strict about its form: the virtual-directory URLs
(RFC 3986 §3.2.2 reg-name), DNS records (RFC 1035 §2.3.1 labels, RFC 1123 §2.1 allows a leading
digit) and the certificate's SANs. Only the name's shape is checked here; nothing is resolved.
"""

from __future__ import annotations

import ipaddress
import re

from casarray.errors import InventoryError

# RFC 1035 §2.3.4: at most 63 octets a label, 255 octets a name on the wire (253 as text).
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_NAME = 253


def host_name(value: str, *, what: str, fqdn: bool = True) -> str:
    """`value` as a lower-case host name without a trailing dot, or InventoryError.

    `what` names the input in the message (for example "--namespace"). With `fqdn` (the default) the
    name needs at least two labels: clients and public CAs need a fully qualified name.
    """
    name = value.strip().rstrip(".").lower()
    hint = "give a DNS name such as outlook.contoso.com"
    if not name:
        raise InventoryError("is empty", where=what, hint=hint)
    if not name.isascii():
        raise InventoryError(
            f"{value!r} is not ASCII",
            where=what,
            hint="write an internationalised name in its xn-- (punycode) form",
        )
    if _is_ip_address(name):
        raise InventoryError(
            f"{value!r} is an IP address, not a DNS name",
            where=what,
            hint="clients and certificates need a name; the address goes in the DNS record",
        )
    if len(name) > _MAX_NAME:
        raise InventoryError(f"{value!r} is longer than {_MAX_NAME} characters", where=what, hint=hint)
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise InventoryError(
                f"{value!r} is not a valid DNS name (label {label!r})",
                where=what,
                hint="a label is 1-63 letters, digits or '-', with no '-' at either end",
            )
    if fqdn and len(labels) < 2:
        raise InventoryError(f"{value!r} is not fully qualified", where=what, hint=hint)
    return name


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
