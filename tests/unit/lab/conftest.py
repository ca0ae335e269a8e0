import pytest
import typer

from casarray.cli import lab as lab_cli


@pytest.fixture
def app() -> typer.Typer:
    """A Typer app with just the lab verbs (`sim-cas`, `lab`)."""
    app = typer.Typer()
    lab_cli.register(app)
    return app
