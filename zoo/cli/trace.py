"""``zoo trace``: the seed note's worked example, step by step."""

from __future__ import annotations

import click

from zoo.cli.common import emit_json


def _v(values, digits=5) -> str:
    if isinstance(values, (list, tuple)):
        return "(" + ", ".join(_v(v, digits) for v in values) + ")"
    return f"{values:.{digits}f}"


def _slip(key: str) -> str:
    from zoo.trace import NOTE_SLIPS

    if key not in NOTE_SLIPS:
        return ""
    note_value, why = NOTE_SLIPS[key]
    return f"\n      the note has {_v(note_value, 6 if key == 'C_new' else 4)}: {why}"


@click.command("trace")
@click.option("--stop", "stops", multiple=True, default=("loss_below=0.001",),
              show_default=True, metavar="SPEC",
              help="Stopping criteria for the continued training (see 'zoo train --help').")
@click.option("--max-steps", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Step budget for the continued training (0 skips it).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def trace_command(stops, max_steps, as_json):
    """Replay the seed note's worked example (3-2-1 sigmoid network) step by step."""
    from zoo.trace import LR, worked_example

    f = worked_example()
    history, reason = ([], None)
    if max_steps > 0:
        from zoo.trace import train_until_stop

        history, reason = train_until_stop(stops, max_steps)
    if as_json:
        emit_json({**f, "continued": {"stop_reason": reason, "steps": len(history),
                                      "final_loss": history[-1][1] if history else None}})
        return
    lines = [
        "The seed note's worked example: a 3-2-1 network with sigmoid activations,",
        "x = (2, 3, -1), y = 1, loss C = (a - y)^2, plain gradient descent with lr 0.1.",
        "Computed by zoo's own Dense, Sigmoid, MSE and SGD in float64.",
        "",
        "1. input -> hidden:  z1 = W1 x + b1 = " + _v(f["z1"]),
        "                     a1 = sigmoid(z1) = " + _v(f["a1"]),
        "2. hidden -> output: z2 = W2 a1 + b2 = " + _v(f["z2"]),
        "                     a2 = sigmoid(z2) = " + _v(f["a2"]),
        "3. loss:             C = (a2 - y)^2 = " + _v(f["C"]) + _slip("C"),
        "4. backward:         dC/da2 = 2(a2 - y) = " + _v(f["dC_da2"]),
        "                     da2/dz2 = a2(1 - a2) = " + _v(f["da2_dz2"]),
        "                     dC/dW2 = " + _v(f["dC_dW2"]) + _slip("dC_dW2"),
        "                     dC/db2 = " + _v(f["dC_db2"]),
        "                     dC/dW1 = " + _v(f["dC_dW1"]),
        "                     dC/db1 = " + _v(f["dC_db1"]),
        f"5. update (output layer only, as the note does, lr {LR}):",
        "                     W2 = " + _v(f["W2_new"]) + _slip("W2_new"),
        "                     b2 = " + _v(f["b2_new"]),
        "6. forward again:    a2 = " + _v(f["a2_new"]) + ", C = " + _v(f["C_new"])
        + _slip("C_new"),
        f"                     the loss fell from {f['C']:.5f} to {f['C_new']:.5f}",
    ]
    if history:
        lines += ["", "7. keep training (all layers) until a stopping rule fires:"]
        shown = sorted({0, len(history) - 1, *range(0, len(history), max(1, len(history) // 8))})
        for i in shown:
            step, value = history[i]
            lines.append(f"     step {step:>6}  loss {value:.6f}")
        lines.append(f"   stopped: {reason}")
    click.echo("\n".join(lines))


COMMANDS = [trace_command]
