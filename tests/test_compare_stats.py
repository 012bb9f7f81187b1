"""Statistics of ``zoo compare``: Student-t intervals and the paired t-test, without scipy."""

import csv
import io
import math

import pytest

from zoo.compare import stats
from zoo.compare.runner import compare_best_two, summarise, summary_csv

# t quantiles (0.975) and two-sided p-values from standard tables (Abramowitz and Stegun 26.7).
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 9: 2.262157163,
        10: 2.228138852, 30: 2.042272456, 120: 1.979930405}


@pytest.mark.parametrize("df, expected", sorted(T975.items()))
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, rel=1e-8)


def test_t_tail_probabilities():
    assert stats.t_two_sided_p(2.0, 10) == pytest.approx(0.0733880348, rel=1e-7)
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5, rel=1e-12)  # Cauchy: atan
    assert stats.t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert stats.t_two_sided_p(-3.0, 4) == stats.t_two_sided_p(3.0, 4)
    # Large df approaches the normal distribution: P(|Z| > 1.96) = 0.05.
    assert stats.t_two_sided_p(1.959963985, 10**7) == pytest.approx(0.05, rel=1e-5)
    with pytest.raises(ValueError, match="0.5 < p < 1"):
        stats.t_quantile(0.4, 3)


def test_describe_gives_the_mean_std_and_interval():
    d = stats.describe([0.90, 0.92, 0.94])
    assert d["mean"] == pytest.approx(0.92) and d["std"] == pytest.approx(0.02)
    half = T975[2] * 0.02 / math.sqrt(3)
    assert d["ci95"] == pytest.approx([0.92 - half, 0.92 + half])
    assert stats.describe([0.5]) == {"mean": 0.5, "std": None, "n": 1, "ci95": None}


def test_paired_test_uses_the_per_seed_differences():
    # b trails a by 0.01 on every seed although both vary a lot across seeds: an unpaired view
    # would call it noise, the paired test sees a consistent difference.
    a = {0: 0.80, 1: 0.90, 2: 0.70, 3: 0.85}
    b = {0: 0.79, 1: 0.89, 2: 0.69, 3: 0.84, 4: 0.99}  # seed 4 has no partner: ignored
    result = stats.paired("a", a, "b", b)
    assert result["seeds"] == [0, 1, 2, 3] and result["df"] == 3
    assert result["mean_diff"] == pytest.approx(0.01)
    assert result["better"] == "a" and result["significant"] and result["p"] < 1e-6
    noisy = stats.paired("a", {0: 0.9, 1: 0.8, 2: 0.95}, "b", {0: 0.85, 1: 0.84, 2: 0.9})
    assert noisy["better"] == "a" and not noisy["significant"]
    lo, hi = noisy["ci95"]
    assert lo < 0 < hi and noisy["p"] >= 0.05
    # For an error (lower is better) the smaller mean wins.
    assert stats.paired("a", {0: 1.0, 1: 2.0}, "b", {0: 2.0, 1: 3.5},
                        higher_is_better=False)["better"] == "a"
    assert stats.paired("a", {0: 1.0}, "b", {0: 2.0}) is None
    tie = stats.paired("a", {0: 1.0, 1: 2.0}, "b", {0: 1.0, 1: 2.0})
    assert tie["better"] is None and tie["p"] == 1.0 and not tie["significant"]


def _row(arch, seed, accuracy):
    return {"status": "ok", "arch": arch, "seed": seed, "task": "classify", "params": 10,
            "test": {"accuracy": accuracy}, "stop_reason": "max_epochs", "epochs": 1,
            "steps": 1, "train_time_s": 1.0, "compile_time_s": 0.0, "samples_per_s": 1.0}


def test_the_best_two_rows_are_compared_in_the_summary_csv():
    rows = [_row("a", s, v) for s, v in enumerate([0.60, 0.62, 0.61])]
    rows += [_row("b", s, v) for s, v in enumerate([0.70, 0.73, 0.71])]
    rows += [_row("c", s, v) for s, v in enumerate([0.50, 0.52, 0.51])]
    summary = summarise(rows, ["a", "b", "c"])
    paired = compare_best_two(summary, rows)
    assert (paired["a"], paired["b"], paired["metric"]) == ("b", "a", "accuracy")
    assert paired["better"] == "b" and paired["significant"]
    table = list(csv.DictReader(io.StringIO(summary_csv(summary, paired))))
    assert [r["arch"] for r in table] == ["b", "a", "c"]
    assert float(table[0]["accuracy_ci95_low"]) < 0.7133 < float(table[0]["accuracy_ci95_high"])
    assert table[0]["paired_b"] == "a" and table[0]["paired_significant"] == "True"
    assert float(table[0]["paired_p"]) == pytest.approx(paired["p"])
    assert table[0]["paired_seeds"] == "0 1 2" and table[1]["paired_p"] == ""


def test_an_executor_that_breaks_midway_keeps_the_finished_jobs(monkeypatch, tmp_path):
    """A lost Dask scheduler (here: an executor raising after one job) loses nothing done."""
    from zoo.compare import runner

    class Breaking:
        description = "a breaking executor"

        def run(self, jobs, emit):
            emit(0, dict(_row("linear", 0, 0.5), status="ok"))
            raise OSError("connection to the scheduler lost")

    monkeypatch.setattr(runner, "make_executor", lambda *a: Breaking())
    comparison = runner.Comparison(["linear"], seeds=[0, 1], dataset="xor")
    result = comparison.run()
    assert [r["status"] for r in result["rows"]] == ["ok", "missing"]
    assert result["missing"] == ["linear seed 1"] and not result["interrupted"]
    assert "connection to the scheduler lost" in result["rows"][1]["error"]
    assert any("the finished jobs are kept" in w for w in result["warnings"])
    assert result["summary"][0]["ok"] == 1 and result["summary"][0]["missing"] == 1
    files = runner.save_results(result, tmp_path)
    assert "linear seed 1" in open(files["results.json"]).read()
