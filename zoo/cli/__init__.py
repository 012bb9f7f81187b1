"""The ``zoo`` command line."""


def main():
    # Before numpy loads: BLAS starts on one thread (zoo.kernels.threads has the policy).
    from zoo.kernels.threads import prepare_environment

    prepare_environment()
    from zoo.cli.main import cli, load_plugin_commands
    from zoo.plugins import get_host

    try:
        load_plugin_commands()
        get_host().report_problems()
    except Exception as exc:  # strict mode: a broken plugin is an error, reported in one line
        import sys

        from zoo.errors import ZooError, printable

        if not isinstance(exc, ZooError):
            raise
        print(f"zoo: error: {printable(exc)}", file=sys.stderr)
        sys.exit(2)
    cli()
