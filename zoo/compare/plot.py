"""``curves.png`` of ``zoo compare``: learning curves a reader understands without the command.

Two panels share the epoch axis: the validation metric the table ranks by (or the training
loss when no validation split was held out), and the losses, validation solid and training
dashed. Per architecture: the mean over seeds as a thick line, mean +-1 std as a band (where at
least two seeds reached the epoch), and every seed as a thin line, so a seed that stopped
early stays visible (its end is marked x) instead of silently narrowing the band. A star marks
the epoch whose weights early stopping restored. The title says the dataset, the seeds and the
budget; an interrupted comparison says which jobs are missing.

Matplotlib is optional (``archzoo[plot]``): ``plot_curves`` raises ImportError without it, and
the data preparation (``seed_curves``, ``band``, ``title_lines``) needs nothing.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path

from zoo.atomic import atomic_open

VALIDATION_KEYS = ("val_accuracy", "val_probe_accuracy", "val_r2", "val_mse", "val_loss")
_RESTORED = re.compile(r"restored the weights of epoch (\d+)")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def metric_key(rows: list[dict]) -> str | None:
    """The validation metric to plot, or ``train_loss`` when no row has validation data."""
    for name in (*VALIDATION_KEYS, "train_loss"):
        if any(name in h for r in rows for h in r.get("history") or ()):
            return name
    return None


def restored_epoch(row: dict) -> int | None:
    """The epoch whose weights early stopping restored (from the run's notes), if any."""
    for note in row.get("notes") or ():
        match = _RESTORED.search(str(note))
        if match:
            return int(match.group(1))
    return None


def seed_curves(rows: list[dict], key: str) -> list[dict]:
    """One curve per seed: ``seed``, ``epochs``, ``values``, ``best`` (restored epoch or None),
    ``stopped_early`` (it ended before the longest seed of the same rows)."""
    curves = []
    for r in rows:
        points = [(int(h["epoch"]), float(h[key])) for h in r.get("history") or ()
                  if _finite(h.get(key))]
        if points:
            curves.append({"seed": r.get("seed"), "epochs": [p[0] for p in points],
                           "values": [p[1] for p in points], "best": restored_epoch(r)})
    last = max((c["epochs"][-1] for c in curves), default=0)
    for c in curves:
        c["stopped_early"] = c["epochs"][-1] < last
    return curves


def band(curves: list[dict]):
    """Per epoch: ``(epochs, mean, std, count)`` over the seeds that reached the epoch
    (std 0 where only one did)."""
    by_epoch: dict[int, list] = {}
    for c in curves:
        for epoch, value in zip(c["epochs"], c["values"]):
            by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    means, stds, counts = [], [], []
    for e in epochs:
        values = by_epoch[e]
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0
        means.append(mean)
        stds.append(math.sqrt(var))
        counts.append(len(values))
    return epochs, means, stds, counts


def _budget(result: dict, ok: list[dict]) -> str:
    config = result.get("config") or {}
    if config.get("stop"):
        return "stopping: " + "; ".join(config["stop"])
    if config.get("epochs"):
        return f"budget: {config['epochs']} epochs, early stopping on validation"
    reached: dict[str, list] = {}
    for r in ok:
        arch = reached.setdefault(r["arch"], [0, 0, set()])
        arch[0] = max(arch[0], r.get("epochs") or 0)
        arch[1] = max(arch[1], r.get("steps") or 0)
        arch[2].add(str(r.get("stop_reason") or "").split(":")[0])
    # Architectures that trained alike share one phrase: "linear, mlp: up to 200 epochs...".
    groups: dict[str, list] = {}
    for a, (epochs, steps, why) in reached.items():
        text = f"up to {epochs} epochs / {steps:,} steps, stopped by " \
               f"{', '.join(sorted(k for k in why if k)) or '?'}"
        groups.setdefault(text, []).append(a)
    return "budget: each architecture's defaults; " + "; ".join(
        f"{', '.join(archs)}: {text}" for text, archs in groups.items())


def title_lines(result: dict) -> list[str]:
    """What the figure's title says: data and seeds, budget, missing jobs."""
    rows = result.get("rows") or []
    ok = [r for r in rows if r.get("status") == "ok"]
    archs = result.get("archs") or list(dict.fromkeys(r["arch"] for r in rows))
    dataset = result.get("dataset") or next((r.get("dataset") for r in rows), None) or "?"
    seeds = result.get("seeds") or sorted({r.get("seed") for r in rows}, key=str)
    lines = [f"{', '.join(archs)} on {dataset}: {len(seeds)} seed{'s' * (len(seeds) != 1)} "
             f"each", _budget(result, ok)]
    missing = result.get("missing") or []
    if missing:
        lines.append(f"INTERRUPTED, not shown (unfinished): {', '.join(missing)}")
    return lines


def _label(key: str) -> str:
    return key.replace("val_", "validation ").replace("train_", "training ").replace("_", " ")


def plot_curves(result: dict, path, *, title: list[str] | None = None) -> None:
    """Write the figure as a PNG to ``path``; ``title`` lines replace ``title_lines(result)``.
    Raises ImportError without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    rows = result.get("rows") or []
    ok = [r for r in rows if r.get("status") == "ok"]
    archs = list(dict.fromkeys(r["arch"] for r in ok))
    # Figure + Agg canvas, not pyplot: no global backend switch in the caller's process.
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    # Without validation data the training loss is all there is: one panel, not two alike.
    validated = any(metric_key([r]) != "train_loss" for r in ok)
    left, right = fig.subplots(1, 2) if validated else (fig.subplots(1, 1), None)
    lines = title if title is not None else title_lines(result)
    fig.suptitle("\n".join(textwrap.fill(line, 130) for line in lines[:2]), fontsize=11)
    if len(lines) > 2:
        fig.text(0.5, 0.005, lines[2], ha="center", va="bottom", color="firebrick",
                 fontsize=9)

    any_best = any_early = False
    left_keys = set()
    for i, arch in enumerate(archs):
        color = f"C{i % 10}"
        mine = [r for r in ok if r["arch"] == arch]
        key = metric_key(mine)
        if key is None:
            continue
        left_keys.add(key)
        panels = [(left, key, "-", True)]
        if key != "train_loss":
            panels.append((right, "val_loss", "-", True))
        if right is not None:
            panels.append((right, "train_loss", "--", key == "train_loss"))
        for ax, panel_key, style, labelled in panels:
            curves = seed_curves(mine, panel_key)
            if not curves:
                continue
            for c in curves:
                ax.plot(c["epochs"], c["values"], color=color, linestyle=style, linewidth=0.7,
                        alpha=0.35)
                if c["stopped_early"]:
                    any_early = True
                    ax.plot(c["epochs"][-1], c["values"][-1], "x", color=color, markersize=6)
                if c["best"] in c["epochs"] and style == "-":
                    any_best = True
                    ax.plot(c["best"], c["values"][c["epochs"].index(c["best"])], "*",
                            color=color, markersize=9, markeredgecolor="black",
                            markeredgewidth=0.4)
            epochs, mean, std, counts = band(curves)
            label = f"{arch} ({len(curves)} seed{'s' * (len(curves) != 1)})" if labelled \
                else None
            ax.plot(epochs, mean, color=color, linestyle=style, linewidth=1.8, label=label,
                    marker="." if len(epochs) < 3 else None)
            spread = [(e, m - s, m + s) for e, m, s, n in zip(epochs, mean, std, counts)
                      if n > 1]
            if spread:
                ax.fill_between([p[0] for p in spread], [p[1] for p in spread],
                                [p[2] for p in spread], color=color, alpha=0.18, linewidth=0)

    n_seeds = len(result.get("seeds") or []) or max(
        (sum(r["arch"] == a for r in ok) for a in archs), default=0)
    keys = sorted(left_keys)
    left.set_title(" / ".join(_label(k) for k in keys) or "no history")
    if right is not None:
        right.set_title("loss: validation (solid), training (dashed)")
    guide = []
    if n_seeds > 1:
        guide += [Patch(color="grey", alpha=0.3, label=f"band: mean ± 1 std over "
                        f"{n_seeds} seeds"),
                  Line2D([], [], color="grey", linewidth=1.8, label="thick: mean of the seeds "
                         "still training"),
                  Line2D([], [], color="grey", linewidth=0.7, alpha=0.6, label="thin: one seed")]
    if any_best:
        guide.append(Line2D([], [], marker="*", color="grey", linestyle="none", markersize=9,
                            label="restored best epoch"))
    if any_early:
        guide.append(Line2D([], [], marker="x", color="grey", linestyle="none",
                            label="seed stopped early"))
    for ax in (left, right) if right is not None else (left,):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles=handles + (guide if ax is left else []), fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    with atomic_open(Path(path)) as f:
        f.write(buffer.getvalue())
