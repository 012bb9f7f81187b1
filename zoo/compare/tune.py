"""``zoo compare --tune N``: the same tuning budget for every architecture, chosen on validation.

The fairness rule (Melis et al. 2018, Lucic et al. 2018): a model tuned against one left at its
defaults wins for the wrong reason. So every architecture gets the same ``N`` trials, each
trial is scored on the validation split only (the test metrics of a trial are dropped unread),
and the setting with the best validation score is then trained on every seed of the
comparison and reported on test like any other.

The search space is what the architecture declares: each ``Option``'s ``search`` (a range,
log-uniform when the option is ``log``, or values to pick from) and the run settings of its
``Architecture.search`` (``lr``, ``batch_size``). The learning rate is searched for every
architecture, over one decade either side of its default unless the architecture declares its
own range. What the user fixes (``-o mlp.hidden=64``, ``--lr``, ``--batch-size``) is not
searched.

Trials are reproducible and independent of where they run: trial 0 is the architecture's
defaults (so the choice is never worse than them on the trials' validation score); trials
1..N-1 are random draws from ``numpy.random.default_rng([tune_seed, crc32(arch)])``, made here,
in the calling process, before any trial runs. A trial is an ordinary compare job
(``runner.run_job``) with the drawn setting, trained with seed ``tune_seed``, which must not be
a reported seed: the initialisation that won the selection would otherwise report on test.
Trials run on the comparison's executor (in-process, local processes or Dask), so each executor
gives the same trials, the same choice and the same per-seed results.

Example:
    >>> comparison = Comparison(["mlp", "cnn"], seeds=[0, 1, 2], dataset="mnist1d")
    >>> result = tune_and_compare(comparison, trials=8)
    >>> result["tuning"]["archs"]["mlp"]["chosen"]
"""

from __future__ import annotations

import math
import time
import zlib

import numpy as np

from zoo import checks
from zoo.compare import runner
from zoo.errors import ConfigError

# Trains every trial and seeds the draws: outside the usual reported seeds 0..N-1.
DEFAULT_TUNE_SEED = 1000
# Drawn floats are rounded to this many significant digits: readable, and the same on every
# machine (the draw itself is exact; rounding keeps "lr=0.00314" rather than 17 digits).
SIGNIFICANT_DIGITS = 3


# -- the search space ------------------------------------------------------------------------
def describe_option_space(option) -> str:
    """``"16..512 log"``, ``"0..0.5"``, ``"relu|tanh"``, ``"1..3 x 16..512 log"`` (1 to 3
    items of one width), ``"1 x 32..512 log"``."""
    if not option.searches_range():
        return "|".join(_show(v) for v in option.search)
    low, high = option.search
    text = f"{low:g}..{high:g}" + (" log" if option.log else "")
    if option.type == "ints":
        fewest, most = item_range(option)
        text = f"{fewest}{'' if fewest == most else f'..{most}'} x {text}"
    return text


def item_range(option) -> tuple:
    """How many items an ``"ints"`` option's search draws (default: as many as its default)."""
    if option.search_items is not None:
        return option.search_items
    return (len(option.default), len(option.default))


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Space:
    """One architecture's search space in a comparison: the options and run settings it
    searches, in declaration order (the order of the draws), and their default values."""

    def __init__(self, arch, fixed_options: dict, training: dict):
        from zoo.run import DEFAULT_BATCH_SIZE, DEFAULT_LR

        self.arch = arch
        resolved = arch.resolve_options(fixed_options)
        defaults = arch.training_defaults(resolved)
        self.options = [o for o in arch.options
                        if o.search is not None and o.name not in fixed_options]
        self.settings = {}  # run setting -> (low, high), log-uniform
        if training.get("lr") is None:
            lr = float(defaults.get("lr", DEFAULT_LR))
            self.settings["lr"] = tuple(arch.search.get("lr", (lr / 10, lr * 10)))
        if training.get("batch_size") is None and "batch_size" in arch.search:
            self.settings["batch_size"] = tuple(arch.search["batch_size"])
        self.default = {o.name: plain(resolved[o.name]) for o in self.options}
        if "lr" in self.settings:
            self.default["lr"] = float(defaults.get("lr", DEFAULT_LR))
        if "batch_size" in self.settings:
            self.default["batch_size"] = int(defaults.get("batch_size", DEFAULT_BATCH_SIZE))

    def describe(self) -> dict:
        """``{name: "16..512 log", ...}``: what each searched name ranges over."""
        text = {o.name: describe_option_space(o) for o in self.options}
        for name, (low, high) in self.settings.items():
            text[name] = f"{low:g}..{high:g} log"
        return text

    def draw(self, rng: np.random.Generator) -> dict:
        """One random setting: a value for every searched name, drawn in a fixed order."""
        setting = {}
        for option in self.options:
            setting[option.name] = plain(draw_option(option, rng))
        for name, (low, high) in self.settings.items():
            setting[name] = draw_number(rng, low, high, log=True, integer=name == "batch_size")
        return setting

    def settings_list(self, trials: int, seed: int) -> list[dict]:
        """Trial 0 the defaults, then ``trials - 1`` draws; the same for the same seed."""
        rng = np.random.default_rng([seed, zlib.crc32(self.arch.name.encode())])
        return [dict(self.default)] + [self.draw(rng) for _ in range(trials - 1)]


def plain(value):
    """An ``"ints"`` value as a list, as it reads back from JSON: a setting compares equal
    to itself after a trip through ``results.json`` or a Dask worker."""
    return list(value) if isinstance(value, tuple) else value


def draw_number(rng, low, high, *, log: bool, integer: bool):
    """A uniform (or log-uniform) draw in [low, high], an int or a rounded float."""
    if log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if integer:
        return int(min(max(round(value), math.ceil(low)), math.floor(high)))
    value = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return min(max(value, low), high)


def draw_option(option, rng):
    """A value of ``option`` from its ``search``."""
    if not option.searches_range():
        return option.search[int(rng.integers(len(option.search)))]
    low, high = option.search
    if option.type == "ints":
        fewest, most = item_range(option)
        count = int(rng.integers(fewest, most + 1))
        width = draw_number(rng, low, high, log=option.log, integer=True)
        return (width,) * count
    value = draw_number(rng, low, high, log=option.log, integer=option.type is int)
    # A rounded float may land on an excluded maximum (dropout 1.0): stay inside.
    return option.parse(value) if option.type is int else _inside(option, value, low)


def _inside(option, value: float, low: float) -> float:
    try:
        return option.parse(value)
    except ConfigError:
        return low


def setting_text(setting: dict) -> str:
    """``"hidden=128,128 dropout=0.1 lr=0.00314"``."""
    return " ".join(f"{k}={_show(v)}" for k, v in setting.items()) or "(defaults)"


# -- scoring ---------------------------------------------------------------------------------
def val_score(row: dict, metric: str | None = None) -> tuple | None:
    """``(metric, value)``: the trial's validation score, or ``None`` if it has none.

    The metric the table ranks by, read on validation instead of test: ``metric`` (the
    comparison's ``--metric``) when the trial reports it, else the first of accuracy, probe
    accuracy, r2 and mse."""
    val = row.get("val") or {}
    for name in ([metric] if metric else []) + list(runner.METRICS):
        value = val.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return name, float(value)
    return None


def best_trial(records: list[dict]) -> dict | None:
    """The trial with the best validation score; ties go to the lower validation loss, then
    to the earlier trial (the defaults first)."""
    scored = [r for r in records if r["status"] == "ok" and r.get("val_score") is not None]
    if not scored:
        return None

    from zoo.training.metrics import is_maximised

    def key(r):
        better = -r["val_score"] if is_maximised(r["val_metric"]) else r["val_score"]
        loss = (r.get("val") or {}).get("loss")
        loss = loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf
        return (better, loss, r["trial"])

    return min(scored, key=key)


def trial_record(row: dict, arch: str, trial: int, setting: dict,
                 metric: str | None = None) -> dict:
    """What a trial leaves behind: its setting and validation results, never its test ones
    (selection must not see them, and no reader should be tempted to)."""
    # A trial Ctrl-C stopped midway is not a finished trial: no score.
    status = "interrupted" if runner.interrupted(row) else row["status"]
    score = val_score(row, metric) if status == "ok" else None
    record = {"arch": arch, "trial": trial, "setting": setting, "status": status,
              "val_metric": score[0] if score else None,
              "val_score": score[1] if score else None}
    for key in ("val", "epochs", "steps", "stop_reason", "train_loss", "params",
                "wall_time_s", "worker", "error"):
        if key in row:
            record[key] = row[key]
    return record


# -- the tuning run --------------------------------------------------------------------------
class Tuning:
    """The trials of a planned ``Comparison``: ``trials`` per architecture, checked and drawn
    before anything runs.

    Args:
        comparison: the ``runner.Comparison`` to tune; ``apply`` rewrites its jobs.
        trials: the budget, the same for every architecture (1 = the defaults only).
        seed: seeds the draws and trains the trials; not one of the comparison's seeds.
    """

    def __init__(self, comparison, trials: int, *, seed: int = DEFAULT_TUNE_SEED, host=None):
        from zoo.plugins import resolve_host

        host = resolve_host(host)
        self.trials = checks.positive_int(None, "--tune", trials)
        self.seed = checks.integer(None, "--tune-seed", seed, minimum=0)
        if self.seed in comparison.seeds:
            raise ConfigError(f"--tune-seed {self.seed} is also a reported seed: the trials "
                              f"must train on a seed that does not report on test; "
                              f"give another --tune-seed")
        self.comparison = comparison
        self.metric = getattr(comparison, "metric", None)  # --metric: the ranking one
        # What every job shares before tuning gives each architecture its own lr and options.
        self.shared_config = comparison.shared_config()
        self.group = f"{comparison.group}-tune"
        first = {}
        for job in comparison.jobs:
            first.setdefault(job["arch"], job)
        self.spaces, self.settings, self.jobs, self.owners = {}, {}, [], []
        for arch_name, base in first.items():
            arch = host.architectures.get(arch_name)
            space = Space(arch, dict(base.get("options") or {}), base)
            check_validation(arch, base)
            if not space.default:
                raise ConfigError(f"nothing to tune for {arch_name}: its search space is "
                                  f"fixed by the options and run settings given")
            self.spaces[arch_name] = space
            self.settings[arch_name] = space.settings_list(self.trials, self.seed)
            for trial, setting in enumerate(self.settings[arch_name]):
                job = apply_setting(base, setting)
                job.update(seed=self.seed, group=self.group, index=len(self.jobs))
                runner.config_from_job(job).validate()
                self.jobs.append(job)
                self.owners.append((arch_name, trial))

    def run(self, *, workers: int | None = None, scheduler: str | None = None,
            on_result=None) -> dict:
        """Run every trial and choose a setting per architecture; returns the ``tuning``
        part of the result. After Ctrl-C it has ``interrupted`` set, the finished trials and
        no choice (half the trials are not the budget the others had)."""
        records: list[dict | None] = [None] * len(self.jobs)
        done = [0]

        def emit(index: int, row: dict) -> None:
            arch, trial = self.owners[index]
            records[index] = trial_record(row, arch, trial, self.settings[arch][trial],
                                          self.metric)
            done[0] += 1
            if on_result is not None:
                on_result(records[index], done[0], len(self.jobs))
            if records[index]["status"] == "interrupted":
                raise KeyboardInterrupt

        executor = runner.make_executor(workers, scheduler, len(self.jobs))
        t0 = time.perf_counter()
        stopped = False
        try:
            executor.run(self.jobs, emit)
        except KeyboardInterrupt:
            stopped = True
        rows = []
        for (arch, trial), record, job in zip(self.owners, records, self.jobs):
            if record is None:
                row = runner.complete_row(None, job, stopped)
                record = trial_record(row, arch, trial, self.settings[arch][trial])
            rows.append(record)
        archs = {}
        for arch, space in self.spaces.items():
            mine = [r for r in rows if r["arch"] == arch]
            best = None if stopped else best_trial(mine)
            archs[arch] = {
                "space": space.describe(),
                "chosen": None if best is None else best["setting"],
                "trial": None if best is None else best["trial"],
                "val_metric": None if best is None else best["val_metric"],
                "val_score": None if best is None else best["val_score"],
                "failed": sum(r["status"] == "failed" for r in mine),
            }
        self.result = {
            "trials": self.trials, "seed": self.seed, "search": "random",
            "interrupted": stopped,
            "seeds": list(self.comparison.seeds),
            "selection": (f"best validation {self.metric}" if self.metric else
                          "best validation score (accuracy, probe accuracy, r2 or mse)")
                         + ", ties to the lower validation loss, then the earlier trial",
            "executor": executor.description,
            "shared_config": self.shared_config,
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "archs": archs, "rows": rows,
        }
        return self.result

    def executor(self):
        """What the comparison must run on after the tuning: ``None`` (its own executor) once
        every trial finished, ``NotRun`` after Ctrl-C."""
        return NotRun() if self.result["interrupted"] else None

    def apply(self) -> None:
        """Give every job of the comparison its architecture's chosen setting. An architecture
        whose trials all failed keeps its defaults (its jobs will most likely fail the same
        way, and say why)."""
        chosen = {a: s["chosen"] for a, s in self.result["archs"].items()}
        self.comparison.jobs = [apply_setting(job, chosen[job["arch"]])
                                if chosen.get(job["arch"]) else job
                                for job in self.comparison.jobs]


def check_validation(arch, job: dict) -> None:
    """Tuning chooses on validation data: refuse a plan that holds none out."""
    from zoo.run import DEFAULT_VALIDATION_SPLIT

    split = job.get("validation_split")
    if split is None:
        resolved = arch.resolve_options(job.get("options") or {})
        split = arch.training_defaults(resolved).get("validation_split",
                                                     DEFAULT_VALIDATION_SPLIT)
    if not split:
        raise ConfigError(f"--tune chooses on validation data, but {arch.name} holds none out "
                          f"(validation_split 0, as its preset trains); give "
                          f"--validation-split, e.g. 0.1")


def apply_setting(job: dict, setting: dict) -> dict:
    """``job`` with the options and run settings of ``setting`` laid over its own."""
    job = dict(job, options=dict(job.get("options") or {}))
    for name, value in setting.items():
        if name in ("lr", "batch_size"):
            job[name] = value
        else:
            job["options"][name] = list(value) if isinstance(value, tuple) else value
    return job


def annotate(result: dict, tuning: dict) -> dict:
    """Add the tuning to a comparison's result: ``result["tuning"]``, and in each summary
    entry the chosen setting (``tuned``) and the budget (``tune_trials``). ``config`` is set
    back to what the jobs shared before tuning (the tuned lr of one architecture is not)."""
    result["tuning"] = tuning
    result["config"] = dict(tuning["shared_config"])
    for entry in result["summary"]:
        arch = tuning["archs"].get(entry["arch"], {})
        entry["tuned"] = arch.get("chosen")
        entry["tuned_val"] = arch.get("val_score")
        entry["tune_trials"] = tuning["trials"]
    return result


def tune_and_compare(comparison, trials: int, *, seed: int = DEFAULT_TUNE_SEED,
                     workers=None, scheduler=None, store=None, on_trial=None,
                     on_result=None) -> dict:
    """Tune every architecture of ``comparison`` with ``trials`` trials, then run it with the
    chosen settings; returns the comparison's result with ``tuning`` added."""
    tuning = Tuning(comparison, trials, seed=seed)
    tuned = tuning.run(workers=workers, scheduler=scheduler, on_result=on_trial)
    tuning.apply()
    result = comparison.run(workers=workers, scheduler=scheduler, store=store,
                            on_result=on_result, executor=tuning.executor())
    return annotate(result, tuned)


class NotRun:
    """The executor of a comparison whose tuning Ctrl-C stopped: it runs nothing and stops
    as Ctrl-C does, so the comparison's result lists every job as missing."""

    description = "nothing (the tuning was interrupted)"

    def run(self, jobs, emit) -> None:
        raise KeyboardInterrupt


# -- reporting -------------------------------------------------------------------------------
def tuning_lines(result: dict) -> list[str]:
    """What the table says about the tuning: the budget, each architecture's choice and the
    validation score of every trial (``x`` failed, ``-`` not finished, ``*`` chosen)."""
    tuning = result.get("tuning")
    if not tuning:
        return []
    seeds = len(tuning["seeds"])
    lines = [f"tuned: {tuning['trials']} trials per architecture ({tuning['search']} search, "
             f"trial 0 = defaults, seed {tuning['seed']}), chosen on validation, then trained "
             f"on {seeds} seed{'s' * (seeds != 1)} and reported on test"]
    if tuning.get("interrupted"):
        finished = sum(r["status"] not in ("missing", "interrupted") for r in tuning["rows"])
        lines[0] = (f"tuning INTERRUPTED: {finished} of {len(tuning['rows'])} trials "
                    f"finished; nothing was chosen and no seed was trained")
    for arch, info in tuning["archs"].items():
        mine = [r for r in tuning["rows"] if r["arch"] == arch]
        metric = next((r["val_metric"] for r in mine if r["val_metric"]), None)
        if info["chosen"] is not None:
            lines.append(f"  {arch}: {setting_text(info['chosen'])} (trial {info['trial']}, "
                         f"val {info['val_metric']} {info['val_score']:.4f})")
        elif not tuning.get("interrupted"):
            lines.append(f"  {arch}: no trial finished; its defaults were run")
        shown = " ".join(("-" if r["status"] in ("missing", "interrupted") else "x")
                         if r["val_score"] is None else
                         f"{r['val_score']:.4f}{'*' * (r['trial'] == info['trial'])}"
                         for r in mine)
        lines.append(f"    {arch} trials' val {metric or 'score'}: {shown}")
    return lines


TRIAL_FIELDS = ("arch", "trial", "status", "setting", "val_metric", "val_score", "val_loss",
                "chosen", "epochs", "steps", "stop_reason", "params", "wall_time_s", "error")


def trials_csv(tuning: dict) -> str:
    """Every trial: its setting (as ``name=value`` pairs) and validation score."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, TRIAL_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in tuning["rows"]:
        writer.writerow(dict(r, setting=setting_text(r["setting"]),
                             val_loss=(r.get("val") or {}).get("loss"),
                             chosen=r["trial"] == tuning["archs"][r["arch"]]["trial"]))
    return buffer.getvalue()
