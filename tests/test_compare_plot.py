"""What ``curves.png`` shows: per-seed curves (none dropped), bands, best epochs, the title."""

import pytest

from zoo.compare import plot


def _row(seed, values, best=None, arch="mlp", stop="early_stopping: no gain"):
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1),
                "val_accuracy": v} for e, v in enumerate(values)]
    notes = [f"early_stopping: restored the weights of epoch {best}, the best val_loss"] \
        if best else []
    return {"status": "ok", "arch": arch, "seed": seed, "history": history, "notes": notes,
            "epochs": len(values), "steps": 10 * len(values), "stop_reason": stop}


ROWS = [_row(0, [0.5, 0.6, 0.7, 0.8], best=4), _row(1, [0.4, 0.6], best=1),
        _row(2, [0.6, 0.7, 0.8, 0.9])]


def test_a_seed_that_stopped_early_keeps_its_curve_and_is_marked():
    curves = plot.seed_curves(ROWS, "val_accuracy")
    assert [c["seed"] for c in curves] == [0, 1, 2]
    assert [c["stopped_early"] for c in curves] == [False, True, False]
    assert [c["best"] for c in curves] == [4, 1, None]
    epochs, mean, std, counts = plot.band(curves)
    assert epochs == [1, 2, 3, 4] and counts == [3, 3, 2, 2]
    assert mean[0] == pytest.approx(0.5) and std[0] == pytest.approx(0.1)
    assert mean[3] == pytest.approx(0.85)


def test_the_metric_falls_back_to_the_training_loss_without_validation():
    rows = [dict(r, history=[{"epoch": 1, "train_loss": 0.3}]) for r in ROWS]
    assert plot.metric_key(ROWS) == "val_accuracy" and plot.metric_key(rows) == "train_loss"


def test_the_title_names_data_seeds_budget_and_missing_jobs():
    result = {"rows": ROWS, "archs": ["mlp", "cnn"], "dataset": "mnist1d", "seeds": [0, 1, 2],
              "config": {"epochs": None, "stop": []}, "missing": ["cnn seed 0"]}
    lines = plot.title_lines(result)
    assert lines[0] == "mlp, cnn on mnist1d: 3 seeds each"
    assert lines[1] == "budget: each architecture's defaults; mlp: up to 4 epochs / 40 steps, " \
                       "stopped by early_stopping"
    assert lines[2] == "INTERRUPTED, not shown (unfinished): cnn seed 0"
    assert plot.title_lines(dict(result, config={"epochs": 30}))[1].startswith("budget: 30 ")


def test_the_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    plot.plot_curves({"rows": ROWS, "dataset": "xor", "seeds": [0, 1, 2]}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
