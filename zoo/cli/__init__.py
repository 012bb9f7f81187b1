"""The ``zoo`` command line."""


def main():
    from zoo.cli.main import cli, load_plugin_commands
    from zoo.plugins import get_host

    try:
        load_plugin_commands()
        get_host().report_problems()
    except Exception as exc:  # strict mode: a broken plugin is an error, reported in one line
        import sys

        from zoo.errors import ZooError

        if not isinstance(exc, ZooError):
            raise
        print(f"zoo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    cli()
