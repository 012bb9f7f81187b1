"""``zoo compare``: architectures side by side on one dataset, over several seeds."""

from __future__ import annotations

import sys
import threading
import time

import click

from zoo import checks
from zoo.cli.common import echo, emit_json, parse_key_values, table
from zoo.cli.runs import open_store, store_options
from zoo.cli.train import training_options
from zoo.errors import ConfigError

DEFAULT_SEEDS = 3
METRIC_LABELS = {"accuracy": "accuracy", "probe_accuracy": "probe acc", "r2": "r2",
                 "mse": "mse"}


def parse_archs(values) -> list[str]:
    """``("mlp,cnn", "lstm")`` -> ``["mlp", "cnn", "lstm"]``."""
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def parse_seeds(seeds: int | None, seed_list: str | None) -> list[int]:
    if seeds is not None and seed_list is not None:
        raise click.UsageError("give either --seeds N or --seed-list, not both")
    if seed_list is not None:
        try:
            values = [int(s) for s in seed_list.split(",") if s.strip()]
        except ValueError:
            raise ConfigError("--seed-list expects comma-separated non-negative integers; "
                              f"received {seed_list!r}") from None
        if not values or any(v < 0 for v in values):
            raise ConfigError("--seed-list expects comma-separated non-negative integers; "
                              f"received {seed_list!r}")
        return values
    n = DEFAULT_SEEDS if seeds is None else seeds
    return list(range(checks.positive_int(None, "--seeds", n)))


def parse_arch_options(pairs) -> dict:
    """``("mlp.hidden=16",)`` -> ``{"mlp": {"hidden": "16"}}``."""
    options: dict = {}
    for key, value in parse_key_values(pairs, flag="-o").items():
        arch, dot, name = key.partition(".")
        if not dot or not arch or not name:
            raise ConfigError("-o expects ARCH.KEY=VALUE in zoo compare (e.g. mlp.hidden=16); "
                              f"received {key}={value!r}")
        options.setdefault(arch, {})[name] = value
    return options


def _number(value: float, metric: str) -> str:
    return f"{value:.4g}" if metric == "mse" else f"{value:.4f}"


def _mean_std(stats: dict, metric: str) -> str:
    text = _number(stats["mean"], metric)
    return text if stats["std"] is None else f"{text} ± {_number(stats['std'], metric)}"


def _interval(stats: dict, metric: str) -> str:
    if not stats.get("ci95"):
        return "-"
    low, high = stats["ci95"]
    return f"{_number(low, metric)}..{_number(high, metric)}"


def paired_line(paired: dict) -> str:
    """One sentence on the paired t-test of the best two rows."""
    metric, a, b = paired["metric"], paired["a"], paired["b"]
    low, high = paired["ci95"]
    n = len(paired["seeds"])
    head = (f"{a} vs {b}, paired over {n} seeds: {metric} difference "
            f"{paired['mean_diff']:+.4f} (95% CI {low:+.4f}..{high:+.4f}), "
            f"t = {paired['t']:.2f}, p = {paired['p']:.3g}: ")
    if paired["better"] is None:
        return head + "a tie"
    if paired["significant"]:
        return head + f"{paired['better']} is better, beyond the seed noise (p < 0.05)"
    return head + (f"{paired['better']} is ahead, but within the seed noise "
                   f"(p >= 0.05; more seeds may tell)")


def _count(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def summary_table(result: dict) -> str:
    """The comparison table, best first."""
    from zoo.compare.runner import METRICS

    summary = result["summary"]
    chosen = [s["metric"] for s in summary if s["metric"] and s["metric"] not in METRICS]
    names = [*dict.fromkeys(chosen), *(m for m in METRICS
                                       if any(m in s["metrics"] for s in summary))]
    any_failed = any(s["failed"] for s in summary)
    any_missing = any(s.get("missing") for s in summary)
    ranking = next((s["metric"] for s in summary if s["metric"]), None)
    ci = [f"{METRIC_LABELS.get(ranking, ranking)} 95% CI"] if ranking else []
    headers = ["#", "arch", *(METRIC_LABELS.get(m, m) for m in names), *ci, "params", "epochs",
               "steps", "stopped", "train s", "compile s", "samples/s"] + (["failed"] if any_failed
                                                                 else [])
    headers += ["missing"] if any_missing else []
    rows = []
    for rank, s in enumerate(summary, 1):
        row = [rank, s["arch"]]
        row += [_mean_std(s["metrics"][m], m) if m in s["metrics"] else "-" for m in names]
        if ranking:
            row.append(_interval(s["metrics"][ranking], ranking)
                       if ranking in s["metrics"] else "-")
        row += [f"{s['params']:,}" if s["params"] is not None else "-", _count(s["epochs"]),
                _count(s["steps"]),
                ", ".join(f"{k} x{v}" for k, v in s["stop_reasons"].items()) or "-",
                f"{s['train_time_s']:.1f}" if s["train_time_s"] is not None else "-",
                f"{s['compile_time_s']:.1f}" if s["compile_time_s"] is not None else "-",
                f"{s['samples_per_s']:,.0f}" if s["samples_per_s"] is not None else "-"]
        if any_failed:
            row.append(f"{s['failed']}/{s['seeds']}" if s["failed"] else "")
        if any_missing:
            row.append(f"{s['missing']}/{s['seeds']}" if s.get("missing") else "")
        rows.append(row)
    align = [">", "<", *[">"] * (len(names) + len(ci)), ">", ">", ">", "<", ">", ">", ">"]
    seeds = len(result["seeds"])
    lines = [(f"{', '.join(result['archs'])} on {result['dataset']} ({result['task']}): "
              f"test metrics, mean ± std over {seeds} seed{'s' if seeds > 1 else ''}"),
             table(rows, headers, align + [">"] * (any_failed + any_missing))]
    if result.get("interrupted"):
        finished = result["jobs"] - len(result["missing"])
        lines.insert(1, f"INTERRUPTED: {finished} of {result['jobs']} jobs finished; the "
                        f"statistics are over the finished seeds only")
    if "probe_accuracy" in names:
        lines.append("probe acc: accuracy of a linear classifier on the learned codes")
    if chosen:
        lines.append(f"ranked by {chosen[0]} (--metric)")
    if ci:
        lines.append("95% CI: Student-t interval of the mean over seeds")
    if result.get("paired"):
        lines.append(paired_line(result["paired"]))
    for s in summary:
        lines += [f"failed: {s['arch']} {error}" for error in s["errors"]]
    if result.get("missing"):
        lines.append(f"missing (not finished): {', '.join(result['missing'])}")
    from zoo.compare.tune import tuning_lines

    lines += tuning_lines(result)
    return "\n".join(lines)


def job_line(row: dict, done: int, total: int) -> str:
    """One line per finished job."""
    from zoo.compare.runner import stop_name
    from zoo.runstore import headline_metric

    head = f"[{done}/{total}] {row['arch']} seed {row['seed']}"
    if row["status"] != "ok":
        return f"{head}: FAILED {row['error']}"
    name, value = headline_metric(row.get("task"), row.get("test"))
    metric = f"{name} {value:.4f}, " if name else ""
    return (f"{head}: {metric}{row['epochs']} epochs, {stop_name(row['stop_reason'])} "
            f"({row.get('wall_time_s', 0):.1f}s)")


class JobProgress:
    """Job lines on stderr; on a terminal also an overall bar, redrawn every second."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.live = self.stream.isatty()
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.live:
            self._draw()
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.live:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
        return False

    def _tick(self):
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def _draw(self):
        elapsed = time.perf_counter() - self.t0
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        eta = ""
        if 0 < self.done < self.total:
            eta = f", ~{_clock(elapsed / self.done * (self.total - self.done))} left"
        self.stream.write(f"\r[{'=' * filled}{' ' * (width - filled)}] {self.done}/"
                          f"{self.total} jobs  {_clock(elapsed)}{eta}\x1b[K")
        self.stream.flush()

    def __call__(self, row: dict, done: int, total: int) -> None:
        with self._lock:
            self.done = done
            line = job_line(row, done, total)
            self.stream.write(("\r\x1b[K" + line + "\n") if self.live else line + "\n")
            if self.live:
                self._draw()
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else \
        f"{minutes}:{secs:02d}"


@click.command("compare")
@click.option("--arch", "archs", required=True, multiple=True, metavar="A,B,...",
              help="Architectures to compare, comma-separated (see 'zoo list architectures').")
@training_options
@click.option("--seeds", type=int, default=None,
              help=f"Run seeds 0..N-1 for each architecture. Default: {DEFAULT_SEEDS}.")
@click.option("--seed-list", default=None, metavar="0,1,2", help="Exactly these seeds.")
@click.option("-o", "--option", "options", multiple=True, metavar="ARCH.KEY=VALUE",
              help="Option of one architecture, e.g. mlp.hidden=16; repeatable.")
@click.option("-j", "--jobs", "workers", type=int, default=None,
              help="Worker processes (1 = run in this process). Default: one per core.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on Dask: a scheduler address (tcp://host:8786) or 'local' for a "
                   "LocalCluster. Needs archzoo[dask].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for results.csv, summary.csv, results.json and curves.png. "
                   "Default: ./zoo-compare-<date>-<time>.")
@click.option("--tune", type=int, default=None, metavar="N",
              help="Tune first: N trials per architecture from the search space it declares, "
                   "the same N for all, chosen on validation data; the chosen setting is then "
                   "trained on every seed and reported on test.")
@click.option("--tune-seed", type=int, default=None, metavar="S",
              help="Seed of the trials' draws and training; not a reported seed. "
                   "Default: 1000.")
@store_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole result as one JSON object on stdout.")
@click.pass_context
def compare_command(ctx, archs, dataset, epochs, batch_size, optimizer, loss, schedule, metric,
                    lr, stops,
                    validation_split, clip_norm, dtype, seeds, seed_list, options, workers,
                    scheduler, out, store, no_store, as_json, tune=None, tune_seed=None):
    """Train several architectures on the same data, budget and stopping rules, over several
    seeds, and print one table (best first). Exit code 1 if any job failed."""
    from pathlib import Path

    from zoo.compare.runner import Comparison, check_scheduler, save_results

    seed_values = parse_seeds(seeds, seed_list)
    arch_options = parse_arch_options(options)
    if workers is not None:
        checks.positive_int(None, "--jobs", workers)
    if scheduler:
        check_scheduler(scheduler)
    comparison = Comparison(parse_archs(archs), seed_values, dataset=dataset,
                            options=arch_options, epochs=epochs, batch_size=batch_size,
                            optimizer=optimizer, lr=lr, stop=tuple(stops),
                            validation_split=validation_split, clip_norm=clip_norm,
                            dtype=dtype, loss=loss, schedule=schedule, metric=metric)
    if out is not None:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out folder {out}: {exc.strerror}") from None
    # Before any job runs: the results are written where a real temp file can be (the default
    # folder is made in the current one).
    from zoo.atomic import probe_writable

    probe_writable(Path(out if out is not None else ".") / "results.json", "comparison results")
    tuning = plan_tuning(comparison, tune, tune_seed)
    run_store = open_store(store, no_store)
    data = comparison.data
    click.echo(f"comparing {', '.join(comparison.archs)} on {data.name} ({data.task}): "
               f"{len(comparison.archs)} architecture{'s' * (len(comparison.archs) > 1)} x "
               f"{len(seed_values)} seed{'s' * (len(seed_values) > 1)} = "
               f"{len(comparison.jobs)} jobs", err=True)
    try:
        if tuning is not None:
            tuned = run_tuning(tuning, workers, scheduler)
        with JobProgress(len(comparison.jobs)) as progress:
            result = comparison.run(workers=workers, scheduler=scheduler, store=run_store,
                                    on_result=progress,
                                    executor=None if tuning is None else tuning.executor())
    finally:
        if run_store is not None:
            run_store.close()
    if tuning is not None:
        from zoo.compare.tune import annotate

        annotate(result, tuned)
    click.echo(f"ran {result['executor']} in {result['wall_time_s']:.1f}s", err=True)
    result["files"] = files = save_results(result, out)
    for warning in result["warnings"]:
        click.echo(f"zoo: warning: {warning}", err=True)
    if as_json:
        emit_json(result)
    echo(summary_table(result), as_json)
    saved = [name for name in ("results.csv", "summary.csv", "trials.csv", "results.json",
                               "curves.png")
             if files.get(name)]
    echo(f"saved {', '.join(saved)} in {files['dir']}", as_json)
    if files.get("note"):
        echo(files["note"], as_json)
    if result["store"] is not None and result["store"]["ids"]:
        echo(f"recorded {len(result['store']['ids'])} jobs in {result['store']['path']} "
             f"(zoo runs list --group {result['group']})", as_json)
    if result.get("interrupted"):
        click.echo("zoo: interrupted; the finished jobs are saved", err=True)
        ctx.exit(130)
    if result["failed"] or result.get("missing"):
        ctx.exit(1)


def plan_tuning(comparison, trials: int | None, seed: int | None):
    """The ``Tuning`` of ``--tune N`` (checked and drawn before anything runs), or ``None``."""
    if trials is None:
        if seed is not None:
            raise click.UsageError("--tune-seed needs --tune N")
        return None
    from zoo.compare.tune import DEFAULT_TUNE_SEED, Tuning

    return Tuning(comparison, trials, seed=DEFAULT_TUNE_SEED if seed is None else seed)


def run_tuning(tuning, workers, scheduler) -> dict:
    """Run the trials, one line each on stderr, and give the comparison the chosen settings."""
    from zoo.compare.tune import setting_text

    def trial_line(record: dict, done: int, total: int) -> None:
        head = f"[tune {done}/{total}] {record['arch']} trial {record['trial']}"
        if record["status"] == "interrupted":
            line = f"{head}: interrupted"
        elif record["status"] != "ok" or record["val_score"] is None:
            line = f"{head}: FAILED {record.get('error') or 'no validation score'}"
        else:
            line = (f"{head}: val {record['val_metric']} {record['val_score']:.4f} "
                    f"({setting_text(record['setting'])})")
        click.echo(line, err=True)

    n = len(tuning.jobs)
    click.echo(f"tuning: {tuning.trials} trials x {len(tuning.spaces)} architecture"
               f"{'s' * (len(tuning.spaces) > 1)} = {n} trials, chosen on validation", err=True)
    tuned = tuning.run(workers=workers, scheduler=scheduler, on_result=trial_line)
    tuning.apply()
    return tuned


COMMANDS = [compare_command]
