"""Helpers shared by the commands: option parsing, JSON output, tables."""

from __future__ import annotations

import json
import sys

import click

from zoo.errors import ConfigError
from zoo.jsonable import jsonable


def parse_key_values(pairs, flag: str = "-o") -> dict:
    """``("depth=2", "channels=16,32")`` -> ``{"depth": "2", "channels": "16,32"}``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE; received {pair!r}")
        options[key.strip()] = value.strip()
    return options


def emit_json(obj) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(jsonable(obj)) + "\n")
    sys.stdout.flush()


def table(rows, headers, align=None) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    align = align or ["<"] * len(headers)
    def fmt(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()
    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def echo(text: str, json_mode: bool) -> None:
    """Human output: stdout normally, stderr when stdout carries JSON."""
    click.echo(text, err=json_mode)


def format_metrics(metrics: dict) -> str:
    if not metrics:
        return "-"
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())
