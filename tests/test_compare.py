"""zoo compare: planning and fail-fast checks, aggregation and files, the three executors
(in-process, local pool, Dask LocalCluster) giving the same per-seed results, and jobs that fail
or whose worker process is killed mid-run."""

import csv
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from zoo.cli.compare import parse_arch_options, parse_archs, parse_seeds, summary_table
from zoo.cli.main import cli
from zoo.compare import runner as zc
from zoo.errors import ConfigError

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False

SMALL = ["--dataset", "xor", "--epochs", "3", "--batch-size", "32"]


def subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("ZOO_DEBUG", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS")}
    env.update(extra)
    return env


# -- helpers that need no training -----------------------------------------------------------
def test_parse_helpers():
    assert parse_archs(("mlp, cnn", "lstm")) == ["mlp", "cnn", "lstm"]
    assert parse_seeds(None, None) == [0, 1, 2]
    assert parse_seeds(2, None) == [0, 1]
    assert parse_seeds(None, "3,1") == [3, 1]
    assert parse_arch_options(("mlp.hidden=16,8", "cnn.dropout=0.5")) == {
        "mlp": {"hidden": "16,8"}, "cnn": {"dropout": "0.5"}}
    for bad in (("hidden=16",), ("mlp.=3",), (".hidden=3",), ("mlp.hidden",)):
        with pytest.raises(ConfigError, match="-o expects"):
            parse_arch_options(bad)
    for seeds, seed_list in ((0, None), (-1, None), (None, "a,b"), (None, "-1"), (None, ",")):
        with pytest.raises(ConfigError):
            parse_seeds(seeds, seed_list)


def row(arch, seed, acc=None, task="classify", status="ok", stop="early_stopping: no gain",
        epochs=10, extra=None, history=None):
    if status != "ok":
        return zc.failure_row({"arch": arch, "seed": seed, "dataset": "xor"}, "boom")
    test = {"loss": 0.5, **({"accuracy": acc} if acc is not None else {}), **(extra or {})}
    return {"status": "ok", "arch": arch, "seed": seed, "dataset": "xor", "task": task,
            "params": 100, "epochs": epochs, "steps": epochs * 10, "stop_reason": stop,
            "train_loss": 0.4, "val": dict(test), "test": test, "train_time_s": 2.0,
            "compile_time_s": 1.0, "samples_per_s": 500.0, "wall_time_s": 3.0,
            "history": history or [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e,
                                    "val_accuracy": (acc or 0) * e / epochs}
                                   for e in range(1, epochs + 1)]}


RESULT_ROWS = [
    row("mlp", 0, 0.60), row("mlp", 1, 0.70, stop="max_epochs: 10", epochs=8),
    row("cnn", 0, 0.90), row("cnn", 1, 0.94),
    row("ae", 0, task="reconstruct", extra={"mse": 0.1, "r2": 0.8, "probe_accuracy": 0.8}),
    row("ae", 1, task="reconstruct", extra={"mse": 0.2, "r2": 0.6, "probe_accuracy": 0.82}),
    row("reg", 0, task="regress", extra={"mse": 0.3, "r2": 0.5}),
    row("bad", 0, status="failed"), row("bad", 1, status="failed"),
    row("half", 0, 0.5), row("half", 1, status="failed"),
]


def test_summarise_sorts_best_first_with_mean_std_and_stop_reasons():
    summary = zc.summarise(RESULT_ROWS)
    assert [s["arch"] for s in summary] == ["cnn", "ae", "mlp", "half", "reg", "bad"]
    cnn, ae, mlp, half, reg, bad = summary
    assert cnn["metric"] == "accuracy"
    assert cnn["metrics"]["accuracy"]["mean"] == pytest.approx(0.92)
    assert cnn["metrics"]["accuracy"]["std"] == pytest.approx(0.0282843, abs=1e-6)  # ddof=1
    assert ae["metric"] == "probe_accuracy" and set(ae["metrics"]) == {"probe_accuracy",
                                                                        "r2", "mse"}
    assert mlp["stop_reasons"] == {"early_stopping": 1, "max_epochs": 1}
    assert mlp["epochs"] == 9 and mlp["steps"] == 90
    assert half["failed"] == 1 and half["metrics"]["accuracy"]["std"] is None
    assert reg["metric"] == "r2"
    assert bad["metric"] is None and bad["failed"] == 2 and bad["errors"] == [
        "seed 0: boom", "seed 1: boom"]


def test_table_and_files(tmp_path):
    result = {"archs": ["mlp", "cnn", "ae", "reg", "bad", "half"], "dataset": "xor",
              "task": "classify", "seeds": [0, 1], "rows": RESULT_ROWS,
              "summary": zc.summarise(RESULT_ROWS)}
    text = summary_table(result)
    lines = text.splitlines()
    header = lines[1].split()
    assert header[:4] == ["#", "arch", "accuracy", "probe"]
    assert header[-1] == "failed"
    assert lines[3].split()[:5] == ["1", "cnn", "0.9200", "±", "0.0283"]
    assert "failed: bad seed 0: boom" in text

    files = zc.save_results(result, tmp_path / "out")
    with open(files["results.csv"]) as f:
        per_seed = list(csv.DictReader(f))
    assert len(per_seed) == len(RESULT_ROWS)
    assert {"arch", "seed", "status", "test_accuracy", "val_accuracy", "stop_reason",
            "error"} <= set(per_seed[0])
    with open(files["summary.csv"]) as f:
        table = list(csv.DictReader(f))
    assert [t["arch"] for t in table] == ["cnn", "ae", "mlp", "half", "reg", "bad"]
    assert float(table[0]["accuracy_mean"]) == pytest.approx(0.92)
    with open(files["results.json"]) as f:
        saved = json.load(f)
    assert len(saved["rows"]) == len(RESULT_ROWS) and saved["summary"][0]["arch"] == "cnn"
    if HAVE_MATPLOTLIB:
        with open(files["curves.png"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert files["curves.png"] is None and "archzoo[plot]" in files["note"]


def test_without_matplotlib_the_rest_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    result = {"rows": RESULT_ROWS[:2], "summary": zc.summarise(RESULT_ROWS[:2])}
    files = zc.save_results(result, tmp_path)
    assert files["curves.png"] is None and "archzoo[plot]" in files["note"]
    assert os.path.exists(files["results.json"]) and not (tmp_path / "curves.png").exists()


# -- real comparisons ------------------------------------------------------------------------
# Two test plugins, installed for real (a module plus a .dist-info with an entry point on
# PYTHONPATH) so that spawned pool workers and Dask workers load them too:
#   boom   - its builder raises: the job fails in its row, the others finish.
#   killer - the mlp, except that the first time it trains (no marker file yet) it kills its
#            own process with SIGKILL in the middle of the first epoch.
PLUGIN = '''
import os
import signal

from zoo.architecture import Architecture
from zoo.hookspecs import hookimpl
from zoo_plugins import mlp


def build_boom(spec, options):
    raise RuntimeError("boom: this plugin refuses to build")


def build_killer(spec, options):
    model = mlp.build(spec, options)
    forward, calls = model.forward, [0]

    def killing_forward(x, training=False):
        calls[0] += 1
        marker = os.environ["ZOO_TEST_KILL_MARKER"]  # "always": kill on every run
        if training and calls[0] == 5 and (marker == "always" or not os.path.exists(marker)):
            if marker != "always":
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(x, training)

    model.forward = killing_forward
    return model


BOOM = Architecture("boom", "raises in build", ("classify",), build_boom)
KILLER = Architecture("killer", "mlp that kills its worker once", ("classify",), build_killer,
                      options=mlp.OPTIONS, defaults=mlp.MLP.defaults)


@hookimpl
def register_architectures(register):
    register(BOOM)
    register(KILLER)
'''


@pytest.fixture(scope="module")
def test_plugins(tmp_path_factory):
    """Install the test plugins for this process and every process it starts."""
    import importlib

    from zoo import plugins

    where = tmp_path_factory.mktemp("plugins")
    (where / "fake_zoo_compare.py").write_text(PLUGIN)
    info = where / "fake_zoo_compare-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-zoo-compare\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[zoo]\nfake_compare = fake_zoo_compare\n")
    saved_path, saved_env = list(sys.path), os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(where))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), saved_env]))
    importlib.invalidate_caches()
    plugins.reset_host()
    yield where
    sys.path[:] = saved_path
    if saved_env is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved_env
    sys.modules.pop("fake_zoo_compare", None)
    plugins.reset_host()


TRAINING = {"dataset": "xor", "epochs": 3, "batch_size": 32}
OPTIONS = {"mlp": {"hidden": "16"}, "killer": {"hidden": "16"}}


def fingerprint(r: dict) -> tuple:
    """What must not depend on where a job ran: everything but timings and the worker."""
    if r["status"] != "ok":
        return (r["arch"], r["seed"], r["status"], r["error"])
    history = [{k: v for k, v in h.items() if k != "time"} for h in r["history"]]
    return (r["seed"], r["params"], r["epochs"], r["steps"], r["stop_reason"], r["train_loss"],
            json.dumps(r["val"], sort_keys=True), json.dumps(r["test"], sort_keys=True),
            json.dumps(history, sort_keys=True))


def by_arch(result: dict, arch: str) -> list:
    return [r for r in result["rows"] if r["arch"] == arch]


def options_for(*archs):
    return {a: OPTIONS[a] for a in archs if a in OPTIONS}


@pytest.fixture(scope="module")
def in_process(test_plugins):
    """The reference: mlp over two seeds plus a failing architecture, in this process."""
    archs = ["mlp", "boom"]
    comparison = zc.Comparison(archs, [0, 1], options=options_for(*archs), **TRAINING)
    return comparison.run(workers=1)


def check_against_reference(result, reference, marker):
    mlp = [fingerprint(r) for r in by_arch(result, "mlp")]
    assert mlp == [fingerprint(r) for r in by_arch(reference, "mlp")]
    # The killer is the mlp once its worker has been killed and the job re-run elsewhere.
    assert os.path.exists(marker), "the killer job never ran"
    with open(marker) as f:
        killed_pid = f.read()
    killer = by_arch(result, "killer")
    assert [r["status"] for r in killer] == ["ok", "ok"], [r.get("error") for r in killer]
    assert [fingerprint(r) for r in killer] == mlp
    assert all(not r["worker"].endswith(f":{killed_pid}") for r in killer)
    boom = by_arch(result, "boom")
    assert [(r["status"], r["error"]) for r in boom] == [
        ("failed", "RuntimeError: boom: this plugin refuses to build")] * 2
    assert result["failed"] == 2 and result["jobs"] == 6


def test_in_process_reports_the_failing_job_in_its_row(in_process):
    assert in_process["executor"] == "in this process"
    assert [(r["arch"], r["seed"], r["status"]) for r in in_process["rows"]] == [
        ("mlp", 0, "ok"), ("mlp", 1, "ok"), ("boom", 0, "failed"), ("boom", 1, "failed")]
    boom = by_arch(in_process, "boom")[0]
    assert boom["error"] == "RuntimeError: boom: this plugin refuses to build"
    assert "build_boom" in boom["traceback"]
    mlp = by_arch(in_process, "mlp")
    assert [r["epochs"] for r in mlp] == [3, 3] and mlp[0]["params"] == 2 * 16 + 16 + 16 * 2 + 2
    assert fingerprint(mlp[0]) != fingerprint(mlp[1])  # the seeds differ
    assert [s["arch"] for s in in_process["summary"]] == ["mlp", "boom"]


@pytest.mark.slow
def test_local_pool_gives_the_same_rows_despite_a_killed_worker(in_process, tmp_path,
                                                                monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv("ZOO_TEST_KILL_MARKER", str(marker))
    archs = ["mlp", "boom", "killer"]
    result = zc.Comparison(archs, [0, 1], options=options_for(*archs),
                           **TRAINING).run(workers=2)
    assert result["executor"] == "on a local pool of 2 processes"
    check_against_reference(result, in_process, marker)


@pytest.mark.slow
def test_a_job_that_always_kills_its_worker_fails_in_its_row(test_plugins, monkeypatch):
    monkeypatch.setenv("ZOO_TEST_KILL_MARKER", "always")
    monkeypatch.setattr(zc, "POOL_MAX_DEATHS", 1)  # one death when alone is proof enough
    result = zc.Comparison(["killer"], [0], options=options_for("killer"),
                           **TRAINING).run(workers=2)
    [killer] = result["rows"]
    assert killer["status"] == "failed"
    assert killer["error"].startswith("the worker process died while running this job 2 times")


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_rows_despite_a_killed_worker(in_process, tmp_path,
                                                                        monkeypatch):
    pytest.importorskip("distributed")
    marker = tmp_path / "killed"
    monkeypatch.setenv("ZOO_TEST_KILL_MARKER", str(marker))
    archs = ["mlp", "boom", "killer"]
    result = zc.Comparison(archs, [0, 1], options=options_for(*archs),
                           **TRAINING).run(workers=2, scheduler="local")
    assert result["executor"] == "on a Dask LocalCluster (2 workers)"
    check_against_reference(result, in_process, marker)


@pytest.mark.slow
def test_dask_reports_a_job_it_gives_up_on(test_plugins, monkeypatch):
    dask = pytest.importorskip("dask")
    monkeypatch.setenv("ZOO_TEST_KILL_MARKER", "always")
    comparison = zc.Comparison(["killer"], [0], options=options_for("killer"), **TRAINING)
    # LocalCluster's scheduler runs in this process and reads this setting.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        result = comparison.run(workers=1, scheduler="local")
    [killer] = result["rows"]
    assert killer["status"] == "failed"
    assert killer["error"].startswith("the Dask workers running this job died repeatedly")


# -- the command line ------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_cli_prints_the_table_saves_files_records_jobs_and_exits_1_on_a_failure(test_plugins,
                                                                                tmp_path):
    from zoo.runstore import RunStore

    out, store = tmp_path / "out", tmp_path / "runs.db"
    result = invoke("compare", "--arch", "boom,mlp", "--seeds", "2", "-o", "mlp.hidden=16",
                    *SMALL, "--jobs", "1", "--out", str(out), "--store", str(store))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "boom, mlp on xor (classify): test metrics, mean ± std over 2 seeds"
    assert lines[1].split() == ["#", "arch", "accuracy", "accuracy", "95%", "CI", "params",
                                "epochs", "steps", "stopped", "train", "s", "compile", "s",
                                "samples/s", "failed"]
    assert lines[3].split()[:2] == ["1", "mlp"] and "max_epochs x2" in lines[3]
    assert lines[4].split()[:4] == ["2", "boom", "-", "-"] and lines[4].endswith("2/2")
    assert "failed: boom seed 0: RuntimeError: boom: this plugin refuses to build" in lines
    saved = ["results.csv", "summary.csv", "results.json"] + ["curves.png"] * HAVE_MATPLOTLIB
    assert f"saved {', '.join(saved)} in {out}" in lines
    # Progress: a line per job on stderr, counted.
    assert "[1/4] boom seed 0: FAILED RuntimeError: boom" in result.stderr
    assert "[4/4] mlp seed 1: accuracy" in result.stderr
    for name in saved:
        assert (out / name).stat().st_size > 0
    runs = RunStore(store, create=False).list(limit=None)
    assert sorted((r["arch"], r["seed"], r["status"], r["kind"]) for r in runs) == [
        ("boom", 0, "failed", "compare"), ("boom", 1, "failed", "compare"),
        ("mlp", 0, "ok", "compare"), ("mlp", 1, "ok", "compare")]
    assert len({r["grp"] for r in runs}) == 1


def test_cli_json_is_one_object_on_stdout(test_plugins, tmp_path):
    result = invoke("compare", "--arch", "mlp", "--seed-list", "3,5", "-o", "mlp.hidden=16",
                    *SMALL, "--jobs", "1", "--out", str(tmp_path), "--no-store", "--json")
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    out = json.loads(line)
    assert {"group", "dataset", "task", "archs", "seeds", "config", "executor", "summary",
            "rows", "failed", "files", "store"} <= set(out)
    assert out["seeds"] == [3, 5] and out["failed"] == 0 and out["store"] is None
    assert [(r["arch"], r["seed"]) for r in out["rows"]] == [("mlp", 3), ("mlp", 5)]
    assert out["config"]["epochs"] == 3 and out["config"]["batch_size"] == 32
    assert out["summary"][0]["metrics"]["accuracy"]["n"] == 2
    assert "mean ± std" in result.stderr  # the table went to stderr
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize("args, message", [
    (["--arch", "mlp,nope"], "unknown architecture 'nope'; installed:"),
    (["--arch", "mlp,mlp"], "architecture mlp is listed twice"),
    (["--arch", "mlp", "-o", "hidden=16"], "-o expects ARCH.KEY=VALUE"),
    (["--arch", "mlp", "-o", "mlp.nope=1"], "mlp: architecture mlp has no option 'nope'"),
    (["--arch", "mlp", "-o", "mlp.hidden=abc"], "option hidden expects"),
    (["--arch", "mlp", "-o", "cnn.channels=4"], "options given for cnn, which is not compared"),
    (["--arch", "mlp", "--seeds", "0"], "--seeds must be a positive integer"),
    (["--arch", "mlp", "--seeds", "2", "--seed-list", "1"], "either --seeds N or --seed-list"),
    (["--arch", "mlp", "--stop", "no_such_rule=3"], "no_such_rule"),
    (["--arch", "mlp", "--lr", "-1"], "lr must be a positive finite number"),
    (["--arch", "mlp", "--jobs", "0"], "--jobs must be a positive integer"),
    (["--arch", "mlp", "--scheduler", "nonsense"], "scheduler must be 'local' or"),
    (["--arch", "mlp", "--dataset", "nope"], "unknown dataset 'nope'"),
])
def test_bad_usage_fails_in_one_line_before_any_job(tmp_path, args, message):
    out, store = tmp_path / "out", tmp_path / "runs.db"
    result = invoke("compare", *args, "--out", str(out), "--store", str(store))
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("zoo: error: ") and message in line
    assert not out.exists() and not store.exists()


def test_real_command_on_the_local_pool(test_plugins, tmp_path):
    """The installed ``zoo`` script as its own process: spawned workers must start from it."""
    script = os.path.join(os.path.dirname(sys.executable), "zoo")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "zoo"]
    env = subprocess_env(ZOO_STORE=str(tmp_path / "runs.db"))
    proc = subprocess.run([*command, "compare", "--arch", "mlp,boom", "--seeds", "1",
                           "-o", "mlp.hidden=16", *SMALL, "--jobs", "2",
                           "--out", str(tmp_path / "out"), "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
                          check=False)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["executor"] == "on a local pool of 2 processes"
    assert [(r["arch"], r["status"]) for r in out["rows"]] == [("mlp", "ok"), ("boom", "failed")]
    assert len(out["store"]["ids"]) == 2
    assert "boom seed 0: FAILED RuntimeError: boom" in proc.stderr
