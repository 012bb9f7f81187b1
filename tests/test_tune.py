"""zoo compare --tune: search spaces declared and checked, reproducible draws, selection on
validation only, the chosen setting applied to every seed, the same results in this process and
on a local pool, and the table, CSVs and JSON saying what was chosen and with what budget."""

import csv
import json

import pytest
from click.testing import CliRunner

from zoo.architecture import Architecture, Option
from zoo.cli.main import cli
from zoo.compare import runner as zc
from zoo.compare import tune
from zoo.errors import ConfigError
from zoo.plugins import resolve_host

SMALL = {"dataset": "xor", "epochs": 2, "batch_size": 32}
BUILT_INS = ("linear", "mlp", "cnn", "rnn", "lstm", "gru", "autoencoder", "transformer",
             "resnet")


# -- declaring a search space ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(type=int, default=4, minimum=1, search=(0, 8)), "is not valid"),
    (dict(type=int, default=4, minimum=1, search=(8, 2)), "low <= high"),
    (dict(type=float, default=0.1, minimum=0, maximum=1, exclusive_maximum=True,
          search=(0.0, 1.0)), "is not valid"),
    (dict(type=str, default="a", choices=("a", "b"), search=("a", "c")), "is not valid"),
    (dict(type=str, default="a", search=()), "non-empty tuple"),
    (dict(type=int, default=4, minimum=1, search=(1, 8), search_items=(1, 2)),
     "search_items applies"),
    (dict(type="ints", default=(4,), minimum=1, search=(1, 8), search_items=(2, 1)),
     "search_items must be"),
])
def test_a_bad_search_declaration_fails_at_import(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Option("x", help="", **kwargs)


def test_architecture_search_covers_lr_and_batch_size_only():
    with pytest.raises(ValueError, match="search covers the run settings lr, batch_size"):
        Architecture("a", "", ("classify",), build=None, search={"epochs": (1, 2)})
    with pytest.raises(ValueError, match=r"search\['batch_size'\] must be"):
        Architecture("a", "", ("classify",), build=None, search={"batch_size": (32.0, 64.0)})
    with pytest.raises(ValueError, match=r"search\['lr'\] must be"):
        Architecture("a", "", ("classify",), build=None, search={"lr": (0.0, 1e-2)})


@pytest.mark.parametrize("name", BUILT_INS)
def test_every_built_in_declares_a_space_whose_draws_are_valid(name):
    arch = resolve_host().architectures.get(name)
    space = tune.Space(arch, {}, {})
    assert "lr" in space.settings and space.default["lr"] == arch.defaults["lr"]
    if name != "linear":
        assert len(space.options) >= 2, [o.name for o in space.options]
    settings = space.settings_list(40, seed=7)
    assert settings[0] == space.default
    for setting in settings[1:]:
        assert set(setting) == set(space.default)
        options = {k: v for k, v in setting.items() if k not in ("lr", "batch_size")}
        resolved = arch.resolve_options(options)  # raises on anything invalid
        for option in space.options:
            value = resolved[option.name]
            if option.type == "ints":
                low, high = option.search
                fewest, most = tune.item_range(option)
                assert fewest <= len(value) <= most and all(low <= v <= high for v in value)
            elif option.searches_range():
                assert option.search[0] <= value <= option.search[1]
            else:
                assert value in option.search
        low, high = space.settings["lr"]
        assert low <= setting["lr"] <= high
    # Random search explores: not every draw is the same.
    assert len({json.dumps(s, sort_keys=True) for s in settings}) > 30


def test_draws_are_reproducible_and_independent_of_the_other_architectures():
    host = resolve_host()
    mlp = tune.Space(host.architectures.get("mlp"), {}, {})
    assert mlp.settings_list(6, seed=3) == mlp.settings_list(6, seed=3)
    assert mlp.settings_list(6, seed=3) != mlp.settings_list(6, seed=4)
    alone = tune.Tuning(zc.Comparison(["mlp"], [0], **SMALL), 5)
    both = tune.Tuning(zc.Comparison(["cnn", "mlp"], [0], **SMALL), 5)
    assert alone.settings["mlp"] == both.settings["mlp"]
    assert len(both.jobs) == 10 and {j["seed"] for j in both.jobs} == {tune.DEFAULT_TUNE_SEED}


def test_what_the_user_fixes_is_not_searched():
    comparison = zc.Comparison(["mlp"], [0, 1], options={"mlp": {"hidden": "16"}}, lr=0.01,
                               **SMALL)
    tuning = tune.Tuning(comparison, 4)
    space = tuning.spaces["mlp"]
    assert set(space.default) == {"dropout"}
    assert all(j["options"]["hidden"] == "16" and j["lr"] == 0.01 for j in tuning.jobs)
    assert [j["options"]["dropout"] for j in tuning.jobs][0] == 0.2  # trial 0: defaults


@pytest.mark.parametrize("archs, kwargs, tune_kwargs, message", [
    (["mlp"], {}, {"seed": 1}, "--tune-seed 1 is also a reported seed"),
    (["mlp"], {}, {"trials": 0}, "--tune must be a positive integer"),
    (["linear"], {"lr": 0.01, "batch_size": 32}, {}, "nothing to tune for linear"),
    (["mlp"], {"options": {"mlp": {"preset": "mnist1d"}}}, {},
     "--tune chooses on validation data, but mlp holds none out"),
])
def test_plans_that_cannot_be_tuned_fairly_are_refused(archs, kwargs, tune_kwargs, message):
    training = dict(SMALL, **kwargs)
    comparison = zc.Comparison(archs, [0, 1], **training)
    with pytest.raises(ConfigError, match=message):
        tune.Tuning(comparison, **{"trials": 3, **tune_kwargs})


# -- choosing --------------------------------------------------------------------------------
def record(trial, score, loss, metric="accuracy", status="ok"):
    return {"arch": "a", "trial": trial, "status": status, "setting": {"lr": trial},
            "val_metric": metric, "val_score": score, "val": {"loss": loss}}


def test_the_best_validation_score_wins_ties_to_the_lower_loss_then_the_earlier_trial():
    assert tune.best_trial([record(0, 0.9, 0.3), record(1, 0.95, 0.5),
                            record(2, 0.95, 0.4), record(3, 0.99, 0.1, status="failed")]
                           )["trial"] == 2
    assert tune.best_trial([record(0, 0.9, 0.3), record(1, 0.9, 0.3)])["trial"] == 0
    assert tune.best_trial([record(0, 2.0, 2.0, "mse"), record(1, 1.0, 1.0, "mse")]
                           )["trial"] == 1  # mse: lower is better
    assert tune.best_trial([record(0, None, None, status="failed")]) is None


def test_with_metric_the_trials_are_scored_on_that_metric_on_validation():
    row = {"status": "ok", "val": {"loss": 0.2, "accuracy": 0.9, "macro_f1": 0.7}}
    assert tune.val_score(row) == ("accuracy", 0.9)
    assert tune.val_score(row, "macro_f1") == ("macro_f1", 0.7)
    assert tune.val_score(row, "mae") == ("accuracy", 0.9)  # not reported: the default
    assert tune.best_trial([record(0, 0.3, 0.1, "mae"), record(1, 0.2, 0.5, "mae")]
                           )["trial"] == 1  # mae: lower is better
    comparison = zc.Comparison(["linear"], [0], metric="macro_f1", **SMALL)
    tuning = tune.Tuning(comparison, 2)
    assert tuning.metric == "macro_f1"
    tuned = tuning.run(workers=1)
    assert [r["val_metric"] for r in tuned["rows"]] == ["macro_f1", "macro_f1"]
    assert tuned["selection"].startswith("best validation macro_f1")


def test_a_trial_keeps_its_validation_results_and_never_its_test_ones():
    row = {"status": "ok", "val": {"loss": 0.2, "accuracy": 0.9},
           "test": {"loss": 0.1, "accuracy": 1.0}, "epochs": 2, "history": [{}]}
    kept = tune.trial_record(row, "mlp", 3, {"lr": 0.01})
    assert kept["val_score"] == 0.9 and kept["val_metric"] == "accuracy"
    assert "test" not in kept and "history" not in kept


# -- running ---------------------------------------------------------------------------------
def fingerprint(r: dict) -> tuple:
    """What must not depend on where a job ran: everything but timings and the worker."""
    history = [{k: v for k, v in h.items() if k != "time"} for h in r["history"]]
    return (r["arch"], r["seed"], r["status"], r["options"], r["lr"], r["batch_size"],
            r["epochs"], r["train_loss"], json.dumps(r["val"], sort_keys=True),
            json.dumps(r["test"], sort_keys=True), json.dumps(history, sort_keys=True))


def trial_fingerprint(r: dict) -> tuple:
    return (r["arch"], r["trial"], json.dumps(r["setting"]), r["status"], r["epochs"],
            r["train_loss"], json.dumps(r["val"], sort_keys=True))


def tuned_run(workers=None, scheduler=None):
    comparison = zc.Comparison(["mlp", "cnn"], [0, 1], **SMALL)
    return tune.tune_and_compare(comparison, 3, workers=workers, scheduler=scheduler)


@pytest.fixture(scope="module")
def in_process():
    return tuned_run(workers=1)


def test_the_chosen_setting_is_trained_on_every_seed(in_process):
    tuning = in_process["tuning"]
    assert tuning["trials"] == 3 and tuning["seeds"] == [0, 1]
    assert [r["trial"] for r in tuning["rows"]] == [0, 1, 2, 0, 1, 2]
    for arch in ("mlp", "cnn"):
        chosen = tuning["archs"][arch]
        mine = [r for r in tuning["rows"] if r["arch"] == arch]
        assert chosen["val_score"] == max(r["val_score"] for r in mine)
        rows = [r for r in in_process["rows"] if r["arch"] == arch]
        assert [r["seed"] for r in rows] == [0, 1] and all(r["status"] == "ok" for r in rows)
        for r in rows:
            assert r["lr"] == chosen["chosen"]["lr"]
            for name, value in chosen["chosen"].items():
                if name != "lr":
                    assert r["options"][name] == value
        entry = next(s for s in in_process["summary"] if s["arch"] == arch)
        assert entry["tuned"] == chosen["chosen"] and entry["tune_trials"] == 3
    assert in_process["config"]["lr"] is None  # the shared config, not one arch's tuned lr


def test_a_local_pool_gives_the_same_trials_choices_and_results(in_process):
    pool = tuned_run(workers=2)
    assert pool["tuning"]["executor"] == "on a local pool of 2 processes"
    assert [trial_fingerprint(r) for r in pool["tuning"]["rows"]] == \
        [trial_fingerprint(r) for r in in_process["tuning"]["rows"]]
    assert pool["tuning"]["archs"] == in_process["tuning"]["archs"]
    assert [fingerprint(r) for r in pool["rows"]] == [fingerprint(r) for r in in_process["rows"]]


def test_cli_tune_prints_the_choice_and_writes_it_in_every_file(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compare", "--arch", "mlp,linear", "--dataset", "xor",
                                      "--epochs", "2", "--batch-size", "32", "--seeds", "2",
                                      "--tune", "3", "-j", "1", "--out", str(out),
                                      "--no-store", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    tuning = payload["tuning"]
    assert set(tuning["archs"]) == {"mlp", "linear"}
    # --batch-size is given, so linear's declared batch_size range is not searched.
    assert tuning["archs"]["linear"]["space"] == {"lr": "0.001..0.1 log"}
    assert tuning["archs"]["mlp"]["space"] == {"hidden": "1..3 x 32..512 log",
                                               "dropout": "0..0.5", "lr": "0.001..0.03 log"}
    assert "[tune 6/6]" in result.stderr
    with open(out / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [(t["arch"], t["trial"]) for t in trials] == [
        ("mlp", "0"), ("mlp", "1"), ("mlp", "2"), ("linear", "0"), ("linear", "1"),
        ("linear", "2")]
    assert [t["chosen"] for t in trials].count("True") == 2
    assert all("test" not in name for name in trials[0])
    with open(out / "summary.csv") as f:
        summary = {s["arch"]: s for s in csv.DictReader(f)}
    for arch in ("mlp", "linear"):
        assert summary[arch]["tuned"] == tune.setting_text(tuning["archs"][arch]["chosen"])
        assert summary[arch]["tune_trials"] == "3"
    with open(out / "results.json") as f:
        assert json.load(f)["tuning"]["archs"] == tuning["archs"]

    table = CliRunner().invoke(cli, ["compare", "--arch", "linear", "--dataset", "xor",
                                     "--epochs", "2", "--seeds", "1", "--tune", "2",
                                     "--batch-size", "32", "-j", "1", "--out",
                                     str(tmp_path / "t"), "--no-store"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("tuned: 2 trials"))
    assert "chosen on validation, then trained on 1 seed and reported on test" in lines[at]
    assert lines[at + 1].startswith("  linear: lr=") and "(trial " in lines[at + 1]
    assert lines[at + 2].startswith("    linear trials' val accuracy: ")


def test_zoo_info_shows_the_search_space():
    result = CliRunner().invoke(cli, ["info", "cnn", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["search_space"] == {
        "channels": "1..3 x 8..64 log", "depth": "1..2", "hidden": "1 x 32..512 log",
        "dropout": "0..0.5", "lr": "0.0003..0.01 log"}
    text = CliRunner().invoke(cli, ["info", "gru"]).stdout
    assert "zoo compare --tune searches: hidden 16..256 log, layers 1..2, bidirectional " \
           "False|True, dropout 0..0.5, lr 0.0005..0.02 log" in text


def test_ctrl_c_during_the_trials_keeps_the_finished_ones_and_chooses_nothing(tmp_path):
    comparison = zc.Comparison(["linear"], [0, 1], **SMALL)

    def stop_after_two(record, done, total):
        if done == 2:
            raise KeyboardInterrupt

    result = tune.tune_and_compare(comparison, 4, workers=1, on_trial=stop_after_two)
    tuning = result["tuning"]
    assert tuning["interrupted"] and tuning["archs"]["linear"]["chosen"] is None
    assert [r["status"] for r in tuning["rows"]] == ["ok", "ok", "missing", "missing"]
    assert result["interrupted"] and result["executor"] == "nothing (the tuning was interrupted)"
    assert result["missing"] == ["linear seed 0", "linear seed 1"]
    files = zc.save_results(result, tmp_path / "out")
    with open(files["trials.csv"]) as f:
        assert [t["status"] for t in csv.DictReader(f)] == ["ok", "ok", "missing", "missing"]
    from zoo.cli.compare import summary_table

    table = summary_table(result)
    assert "tuning INTERRUPTED: 2 of 4 trials finished; nothing was chosen" in table
    assert "    linear trials' val accuracy: " in table and table.rstrip().endswith("- -")


@pytest.mark.parametrize("args, message", [
    (["--tune", "0"], "--tune must be a positive integer"),
    (["--tune-seed", "5"], "--tune-seed needs --tune N"),
    (["--tune", "2", "--tune-seed", "0"], "--tune-seed 0 is also a reported seed"),
])
def test_cli_bad_tuning_fails_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["compare", "--arch", "mlp", "--dataset", "xor",
                                      "--out", str(tmp_path / "o"), "--no-store", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
