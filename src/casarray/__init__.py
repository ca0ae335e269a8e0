"""casarray: Exchange client access behind one name (Layer-4/Layer-7 balancer and namespace toolkit)."""

__version__ = "0.1.0"
