"""casarray: Exchange client access behind one name (Layer-4/Layer-7 balancer and namespace toolkit)."""

from casarray import compiled as _compiled

__version__ = "0.1.0"

# Before any data-plane module is imported: the pure Python modules run where the compiled ones may not.
_compiled.install()
