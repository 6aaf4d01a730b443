"""`python -m simulator`: the `simulate` command on its own (as in a container)."""

import typer

from simulator.cli import register

app = typer.Typer(add_completion=False, help="Tickerdash market simulator.")
register(app)

if __name__ == "__main__":
    app(prog_name="python -m simulator")
