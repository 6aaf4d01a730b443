"""`python -m tickerdash.simulator`: the `simulate` command on its own (as in a container)."""

import typer

from tickerdash.simulator.cli import register

app = typer.Typer(add_completion=False, help="Tickerdash market simulator.")
register(app)

if __name__ == "__main__":
    app(prog_name="python -m tickerdash.simulator")
