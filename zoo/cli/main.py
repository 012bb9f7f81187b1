"""The ``zoo`` command group: error policy and command registration.

Errors: a ``ZooError`` or a click usage error prints one line on stderr and exits 2; any other
exception during a run prints one line and exits 1. ``zoo --debug`` (or ``ZOO_DEBUG=1``) shows
the traceback instead.
"""

from __future__ import annotations

import os
import sys

import click

from zoo import __version__
from zoo.errors import ZooError


def _debug_requested(args) -> bool:
    return "--debug" in args or os.environ.get("ZOO_DEBUG", "") not in ("", "0")


class ZooGroup(click.Group):
    """A click group whose errors are one clean line (see the module docstring)."""

    def main(self, args=None, prog_name="zoo", **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = _debug_requested(args)
        try:
            rv = super().main(args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("zoo: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            if debug:
                raise
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"zoo: error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except ZooError as exc:
            if debug:
                raise
            click.echo(f"zoo: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("zoo: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug:
                raise
            click.echo(f"zoo: failed: {type(exc).__name__}: {exc} (run with --debug for the "
                       "traceback)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zoo")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug):
    """zoo: a plugin-based zoo of neural-network architectures.

    \b
    Start with:
      zoo train --arch cnn            train on the built-in mnist1d dataset
      zoo list                        architectures, datasets, optimizers, losses, criteria
      zoo compare --arch mlp,cnn      architectures side by side on one dataset
    """


def _register_commands() -> None:
    from zoo.cli import inspect, trace, train

    for module in (inspect, train, trace):
        for command in module.COMMANDS:
            cli.add_command(command)
    for optional in ("zoo.cli.checkpoints", "zoo.cli.compare", "zoo.cli.runs",
                     "zoo.cli.scaffold", "zoo.cli.encode"):
        try:
            module = __import__(optional, fromlist=["COMMANDS"])
        except ModuleNotFoundError as exc:
            if exc.name != optional:
                raise
            continue
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def load_plugin_commands() -> None:
    """Let plugins add commands (the host loads every plugin once)."""
    from zoo.plugins import get_host

    get_host().add_commands(cli)
