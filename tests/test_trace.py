"""The seed note's worked example holds the exact figures of docs/architecture.md."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.cli.main import cli
from zoo.trace import worked_example

EXPECTED = {
    "z1": (-0.9, 0.3), "a1": (0.28905, 0.57444), "z2": 0.35941, "a2": 0.58890, "C": 0.16900,
    "dC_dW2": (-0.05754, -0.11434), "dC_db2": -0.19905,
    "W2_new": (0.50575, 0.21143), "b2_new": 0.11991, "C_new": 0.16346,
    "dC_dW1": ((-0.04091, -0.06136, 0.02045), (-0.01946, -0.02920, 0.00973)),
    "dC_db1": (-0.02045, -0.00973),
}


@pytest.fixture(scope="module")
def figures():
    return worked_example()


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_figure_matches_design_to_five_decimals(figures, key):
    got, expected = np.asarray(figures[key]), np.asarray(EXPECTED[key])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=6e-6)


def test_trace_prints_the_figures_and_the_notes_slips():
    result = CliRunner().invoke(cli, ["trace", "--max-steps", "2000"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("0.28905", "0.58890", "0.16900", "(-0.05754, -0.11434)", "-0.19905",
                 "(0.50575, 0.21143)", "0.11991", "0.16346", "-0.0287", "0.164025",
                 "(a - y)^2 / 2"):
        assert text in out, text
    assert "stopped: loss_below" in out


def test_trace_continues_until_the_stopping_rule_fires():
    result = CliRunner().invoke(cli, ["trace", "--json", "--stop", "loss_below=0.01"])
    out = json.loads(result.stdout)
    assert out["continued"]["stop_reason"].startswith("loss_below")
    assert out["continued"]["final_loss"] < 0.01
    assert out["C"] == pytest.approx(0.16900, abs=6e-6)
