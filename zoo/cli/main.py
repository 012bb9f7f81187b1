"""The ``zoo`` command group: error policy and command registration.

Errors: a ``ZooError``, a click usage error or an ``OSError`` on a path the user gave (permission,
name length, I/O) prints one line on stderr and exits 2; any other exception during a run
prints one line and exits 1. No numpy RuntimeWarning reaches the terminal (see
``ZooGroup.main``). Every message is made printable first: a file name holding a
newline or another control character is escaped, so an error is always one line. ``zoo
--debug`` (or ``ZOO_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from zoo import __version__
from zoo.errors import ZooError, describe_os_error, printable


def _debug_requested(args) -> bool:
    return "--debug" in args or os.environ.get("ZOO_DEBUG", "") not in ("", "0")


class ZooGroup(click.Group):
    """A click group whose errors are one clean line (see the module docstring)."""

    def main(self, args=None, prog_name="zoo", **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = _debug_requested(args)
        try:
            with warnings.catch_warnings():
                if not debug:
                    # numpy's overflow/invalid-value RuntimeWarnings (a diverging run, inputs
                    # that overflow the model) would print source lines; what they signal is
                    # checked explicitly and reported in words: the non_finite criterion stops
                    # a diverging run, predict refuses non-finite outputs, data is validated.
                    warnings.simplefilter("ignore", RuntimeWarning)
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
            _error(f"{exc.format_message()}{hint}")
        except ZooError as exc:
            if debug:
                raise
            _error(exc, exc.exit_code)
        except OSError as exc:
            if debug:
                raise
            _error(describe_os_error(exc))
        except KeyboardInterrupt:
            click.echo("zoo: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug:
                raise
            click.echo(printable(f"zoo: failed: {type(exc).__name__}: {exc} (run with --debug "
                                 "for the traceback)"), err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _error(message, code: int = 2) -> None:
    """The one line of a usage or input error, and its exit code (2 unless told)."""
    click.echo(f"zoo: error: {printable(message)}", err=True)
    sys.exit(code)


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
