"""Helpers shared by the commands: option parsing, JSON output, tables."""

from __future__ import annotations

import json
import math
import sys

import click

from zoo.errors import ConfigError


def parse_key_values(pairs, flag: str = "-o") -> dict:
    """``("depth=2", "channels=16,32")`` -> ``{"depth": "2", "channels": "16,32"}``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE; received {pair!r}")
        options[key.strip()] = value.strip()
    return options


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value):
    """JSON has no NaN/Inf: report them as null rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def emit_json(obj) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(_finite(obj), default=_json_default) + "\n")
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
