"""``zoo runs``: the run store on the command line, and the ``--store`` options of train/compare."""

from __future__ import annotations

import os

import click

from zoo.cli.common import echo, emit_json, format_metrics, table


def store_options(fn):
    """``--store PATH`` and ``--no-store``, shared by ``train`` and ``compare``."""
    fn = click.option("--no-store", is_flag=True,
                      help="Do not record this run in the run store.")(fn)
    fn = click.option("--store", metavar="PATH", default=None,
                      help="SQLite run store to record into. Default: $ZOO_STORE, else "
                           "./zoo-runs.db.")(fn)
    return fn


def open_store(path, no_store: bool = False, *, create: bool = True):
    """The ``RunStore`` the options name, or ``None`` with ``--no-store``."""
    if no_store:
        return None
    from zoo.runstore import RunStore

    return RunStore(path, create=create)


def check_store(path, no_store: bool = False) -> None:
    """Before training: an existing store file must be a zoo run store, so a foreign or
    corrupt file is refused now rather than warned about after the run."""
    if no_store:
        return
    from zoo.runstore import RunStore, default_store_path

    target = path or default_store_path()
    if os.path.exists(target):
        RunStore(target, create=False).close()


def record_train_run(result: dict, config: dict, store=None, no_store: bool = False,
                     json_mode: bool = False) -> int | None:
    """Record a finished ``zoo train`` run; a store that fails is a warning, not a failure
    (the run itself succeeded and its result has been printed)."""
    if no_store:
        return None
    from datetime import datetime, timedelta, timezone

    from zoo.runstore import default_store_path

    finished = datetime.now(timezone.utc)
    seconds = (result.get("train_time_s") or 0) + (result.get("compile_time_s") or 0)
    started = (finished - timedelta(seconds=seconds)).isoformat(timespec="seconds")
    try:
        with open_store(store) as run_store:
            run_id = run_store.record(result, config, kind="train", started_at=started,
                                      finished_at=finished.isoformat(timespec="seconds"))
    except Exception as exc:  # noqa: BLE001 - the run succeeded; a lost record only warns
        click.echo(f"zoo: warning: run not recorded in {store or default_store_path()}: {exc}",
                   err=True)
        return None
    echo(f"recorded as run {run_id} in {run_store.path} (zoo runs show {run_id})", json_mode)
    return run_id


def _when(timestamp: str | None) -> str:
    """'2026-11-29T16:55:56+00:00' -> '2026-11-29 17:55' in local time."""
    if not timestamp:
        return "-"
    from datetime import datetime

    try:
        return datetime.fromisoformat(timestamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return timestamp


def _metric(run: dict) -> str:
    if run.get("metric") is None:
        return "-"
    return f"{run['metric_name']} {run['metric']:.4f}"


@click.group("runs")
def runs_group():
    """The run store: every 'zoo train' run and 'zoo compare' job, recorded."""


@runs_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to show, most recent first.")
@click.option("--group", default=None, help="Only the jobs of this comparison.")
@click.option("--arch", default=None, help="Only runs of this architecture.")
@click.option("--store", metavar="PATH", default=None,
              help="SQLite run store. Default: $ZOO_STORE, else ./zoo-runs.db.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {\"store\", \"runs\"} as one JSON object on stdout.")
def list_command(limit, group, arch, store, as_json):
    """List recorded runs, most recent first."""
    from zoo.runstore import RunStore, default_store_path

    path = store or default_store_path()
    if not os.path.exists(path):
        runs = []
    else:
        with RunStore(path, create=False) as run_store:
            runs = run_store.list(limit, group=group, arch=arch)
    if as_json:
        emit_json({"store": str(path), "runs": runs})
        return
    if not runs:
        click.echo(f"no runs recorded in {path}")
        return
    rows = [[r["id"], _when(r["finished_at"]), r["kind"], r["arch"] or "-",
             r["dataset"] or "-", r["seed"] if r["seed"] is not None else "-", _metric(r),
             r["epochs"] if r["epochs"] is not None else "-",
             (r["stop_reason"] or r["error"] or "-")[:40], r["status"], r["grp"] or ""]
            for r in runs]
    click.echo(table(rows, ["id", "finished", "kind", "arch", "dataset", "seed", "test",
                            "epochs", "stopped / error", "status", "group"],
                     [">", "<", "<", "<", "<", ">", "<", ">", "<", "<", "<"]))


@runs_group.command("show")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--store", metavar="PATH", default=None,
              help="SQLite run store. Default: $ZOO_STORE, else ./zoo-runs.db.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
def show_command(run_id, store, as_json):
    """Show one recorded run: configuration, result, per-epoch metrics, versions."""
    with open_store(store, create=False) as run_store:
        run = run_store.get(run_id)
    if as_json:
        emit_json(run)
        return
    click.echo(describe_run(run))


def describe_run(run: dict) -> str:
    """The human view of one stored run."""
    config, result = run["config"], run["result"]
    head = f"run {run['id']}  {run['kind']}  {run['status']}"
    if run.get("grp"):
        head += f"  group {run['grp']}"
    lines = [head, (f"{run['arch']} on {run['dataset']} ({run['task'] or '-'}), "
                    f"seed {run['seed']}")]
    options = result.get("options") or config.get("options") or {}
    if options:
        lines.append("options: " + ", ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in options.items()))
    settings = {k: config.get(k) for k in ("epochs", "batch_size", "optimizer", "lr",
                                           "validation_split", "clip_norm", "dtype")}
    settings.update({k: result[k] for k in ("batch_size", "optimizer", "lr") if k in result})
    lines.append("training: " + ", ".join(f"{k} {v}" for k, v in settings.items()
                                          if v is not None))
    if config.get("stop"):
        lines.append("stop specs: " + "; ".join(config["stop"]))
    if run["status"] == "ok":
        lines.append(f"val: {format_metrics(result.get('val') or {})}")
        lines.append(f"test: {format_metrics(result.get('test') or {})}")
        lines.append(f"stopped: {run['stop_reason']}")
        lines.append(f"params {result.get('params', 0):,}  epochs {run['epochs']}  "
                     f"steps {run['steps']:,}  train {run['train_time_s']:.1f}s  "
                     f"compile {run['compile_time_s']:.1f}s  "
                     f"{result.get('samples_per_s', 0):,.0f} samples/s")
    else:
        lines.append(f"error: {run['error']}")
    lines.append(f"started {_when(run['started_at'])}  finished {_when(run['finished_at'])}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()))
    history = run.get("history") or []
    if history:
        names = [k for k in history[0] if k not in ("epoch", "step", "time")]
        rows = [[h.get("epoch"), *(f"{h[n]:.4f}" if isinstance(h.get(n), float) else "-"
                                   for n in names)] for h in history]
        lines.append(table(rows, ["epoch", *names], [">"] * (len(names) + 1)))
    return "\n".join(lines)


STORE_HELP = "SQLite run store. Default: $ZOO_STORE, else ./zoo-runs.db."


@runs_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True, help="csv: one flat row per run; json: every run in full "
                                      "(config, result, per-epoch history, versions).")
@click.option("--out", metavar="PATH", default=None,
              help="Write to this file (complete or not at all). Default: stdout.")
@click.option("--group", default=None, help="Only the jobs of this comparison.")
@click.option("--arch", default=None, help="Only runs of this architecture.")
@click.option("--store", metavar="PATH", default=None, help=STORE_HELP)
def export_command(fmt, out, group, arch, store):
    """Export recorded runs, oldest first, as CSV or JSON."""
    import csv
    import io
    import json
    from pathlib import Path

    from zoo.errors import ConfigError
    from zoo.jsonable import jsonable

    if out is not None and not Path(out).parent.is_dir():
        raise ConfigError(f"cannot write --out {out}: folder {Path(out).parent} does not exist")
    with open_store(store, create=False) as run_store:
        if fmt == "csv":
            rows = run_store.export_rows(group=group, arch=arch)
            fields = list(dict.fromkeys(k for r in rows for k in r))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            text = buffer.getvalue()
        else:
            runs = [run_store.get(r["id"]) for r in
                    reversed(run_store.list(None, group=group, arch=arch))]
            text = json.dumps(jsonable({"store": str(run_store.path), "runs": runs}),
                              indent=1, default=str) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    from zoo.atomic import atomic_open

    with atomic_open(Path(out)) as f:
        f.write(text.encode())
    click.echo(f"exported {text.count(chr(10)) - 1 if fmt == 'csv' else len(runs)} runs "
               f"to {out}", err=True)


@runs_group.command("delete")
@click.argument("run_ids", type=int, nargs=-1, required=True, metavar="ID...")
@click.option("--store", metavar="PATH", default=None, help=STORE_HELP)
def delete_command(run_ids, store):
    """Delete recorded runs (and their per-epoch metrics) by id."""
    with open_store(store, create=False) as run_store:
        for run_id in run_ids:  # check them all first: all or nothing for unknown ids
            run_store.get(run_id)
        for run_id in run_ids:
            run_store.delete(run_id)
            click.echo(f"deleted run {run_id}")


def _flat(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value):
        out[prefix] = ",".join(map(str, value))
    else:
        out[prefix] = value


def diff_rows(a: dict, b: dict) -> list[dict]:
    """Config and results of two stored runs side by side: ``{"key", "a", "b", "same"}``."""
    def view(run):
        flat = {}
        _flat("", {k: run[k] for k in ("kind", "status", "arch", "dataset", "seed")}, flat)
        _flat("config", {k: v for k, v in run["config"].items()
                         if k not in ("arch", "dataset", "seed", "group", "index")}, flat)
        result = run["result"]
        _flat("", {k: result.get(k) for k in ("params", "epochs", "steps", "stop_reason",
                                                "train_loss", "train_time_s", "optimizer",
                                                "lr", "batch_size")}, flat)
        _flat("options", result.get("options") or run["config"].get("options") or {}, flat)
        _flat("val", result.get("val") or {}, flat)
        _flat("test", result.get("test") or {}, flat)
        flat["error"] = run.get("error")
        flat["zoo_version"] = run.get("zoo_version")
        return flat

    va, vb = view(a), view(b)
    keys = list(dict.fromkeys([*va, *vb]))
    return [{"key": k, "a": va.get(k), "b": vb.get(k), "same": va.get(k) == vb.get(k)}
            for k in keys if va.get(k) is not None or vb.get(k) is not None]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@runs_group.command("diff")
@click.argument("run_a", type=int, metavar="A")
@click.argument("run_b", type=int, metavar="B")
@click.option("--all", "show_all", is_flag=True, help="Also list the settings that agree.")
@click.option("--store", metavar="PATH", default=None, help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print {\"a\", \"b\", \"rows\"} as one JSON object (every key).")
def diff_command(run_a, run_b, show_all, store, as_json):
    """Two recorded runs side by side: what differs in their configuration and results."""
    with open_store(store, create=False) as run_store:
        a, b = run_store.get(run_a), run_store.get(run_b)
    rows = diff_rows(a, b)
    if as_json:
        emit_json({"a": run_a, "b": run_b, "rows": rows})
        return
    shown = [r for r in rows if show_all or not r["same"]]
    same = sum(r["same"] for r in rows)
    click.echo(f"run {run_a} vs run {run_b}: {len(rows) - same} of {len(rows)} entries differ")
    if shown:
        click.echo(table([[("  " if r["same"] else "* ") + r["key"], _cell(r["a"]),
                           _cell(r["b"])] for r in shown],
                         ["key", f"run {run_a}", f"run {run_b}"], ["<", "<", "<"]))
    if not show_all and same:
        click.echo(f"({same} equal entries not shown; --all lists them)")


@runs_group.command("plot")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--out", metavar="PATH", default=None,
              help="The PNG to write. Default: ./zoo-run-<ID>.png.")
@click.option("--store", metavar="PATH", default=None, help=STORE_HELP)
def plot_command(run_id, out, store):
    """Plot one recorded run's learning curves (needs archzoo[plot])."""
    from pathlib import Path

    from zoo.errors import ConfigError

    out = Path(out) if out is not None else Path(f"zoo-run-{run_id}.png")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write --out {out}: folder {out.parent} does not exist")
    with open_store(store, create=False) as run_store:
        run = run_store.get(run_id)
    if not run["history"]:
        raise ConfigError(f"run {run_id} has no per-epoch history to plot "
                          f"(status {run['status']})")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("zoo runs plot needs matplotlib: pip install 'archzoo[plot]'") from None
    from zoo.compare.plot import plot_curves

    result = run["result"]
    row = {"status": "ok", "arch": run["arch"], "seed": run["seed"], "history": run["history"],
           "notes": result.get("notes") or [], "epochs": run["epochs"], "steps": run["steps"],
           "stop_reason": run["stop_reason"]}
    title = [f"run {run_id}: {run['arch']} on {run['dataset']}, seed {run['seed']}",
             f"{run['epochs']} epochs, {run['steps'] or 0:,} steps; stopped: "
             f"{run['stop_reason'] or '-'}"]
    plot_curves({"rows": [row], "seeds": [run["seed"]]}, out, title=title)
    click.echo(f"saved {out}")


COMMANDS = [runs_group]
