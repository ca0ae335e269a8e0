"""Configuration: typed models (model.py), YAML loading with line numbers (load.py), units (units.py),
the affinity secret file (secretfile.py)."""

from casarray.config.load import ConfigErrors, load_config, parse_config
from casarray.config.model import Config, Server

__all__ = ["Config", "ConfigErrors", "Server", "load_config", "parse_config"]
