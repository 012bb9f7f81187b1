"""The ``zoo`` command line."""


def main():
    from zoo.cli.main import cli

    cli()
