"""A picture of reconstructions: originals next to what an autoencoder makes of them.

Images are drawn as two rows of thumbnails (originals above, reconstructions below, on one
colour scale); sequences and vectors as one small line plot per example, the reconstruction
dashed over the original. matplotlib is the optional ``plot`` extra
(``pip install 'archzoo[plot]'``); ``require_matplotlib`` says so in one line. Figures are drawn
on an Agg canvas, never through pyplot, so the caller's backend is left alone, and written to a
temporary file renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array

FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
INSTALL_HINT = "pip install 'archzoo[plot]'"
MAX_EXAMPLES = 10


def require_matplotlib(option: str = "--plot") -> None:
    """One clear ConfigError when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(f"{option} needs matplotlib, which is not installed; install it with "
                          f"{INSTALL_HINT}") from None


def check_plot_path(path, option: str = "--plot") -> None:
    """Fail before any work when ``path`` has an unknown format or an absent folder."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{option} must end with {', '.join(FORMATS)}; received {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"cannot write {path}: the folder {folder} does not exist")


def pick_examples(count: int, labels=None, max_examples: int = MAX_EXAMPLES) -> np.ndarray:
    """Indices to show: the first example of each class in class order, else the first ones."""
    if labels is None:
        return np.arange(min(count, max_examples))
    labels = np.asarray(labels)
    classes, first = np.unique(labels, return_index=True)
    chosen = [int(i) for i in first[np.argsort(classes)][:max_examples]]
    taken = set(chosen)
    rest = [i for i in range(count) if i not in taken]
    return np.asarray(chosen + rest[:max_examples - len(chosen)], dtype=np.int64)


def plot_reconstructions(originals, reconstructions, path, *, labels=None, title=None) -> None:
    """Draw ``originals`` next to ``reconstructions`` (same shape, batch first) to ``path``.

    Args:
        originals, reconstructions: images ``(N, C, H, W)``, sequences ``(N, T, F)`` or
            vectors ``(N, F)``; all N are drawn (pick them with ``pick_examples``).
        path: a .png, .svg, .pdf or .jpg file.
        labels: optional class names or numbers, one per example, shown above each.
        title: the figure's title.

    Raises ImportError without matplotlib.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(originals, dtype=np.float64)
    r = np.asarray(reconstructions, dtype=np.float64)
    if x.shape != r.shape or x.ndim not in (2, 3, 4) or len(x) == 0:
        raise DataError(f"plot_reconstructions: originals and reconstructions must be one "
                        f"non-empty batch of vectors, sequences or images of the same shape; "
                        f"received {describe_array(originals)} and "
                        f"{describe_array(reconstructions)}")
    check_plot_path(path, "path")
    n = len(x)
    if x.ndim == 4:
        fig = Figure(figsize=(1.1 * n + 0.9, 2.6), layout="constrained")
        axes = np.asarray(fig.subplots(2, n, squeeze=False))
        _images(axes, x, r, labels)
    else:
        cols = min(n, 5)
        rows = -(-n // cols)
        fig = Figure(figsize=(2.6 * cols, 1.9 * rows + 0.5), layout="constrained")
        axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
        _lines(axes, x, r, labels)
    if title:
        fig.suptitle(title, fontsize=10)
    FigureCanvasAgg(fig)
    _save(fig, Path(path))


def _images(axes, x, r, labels):
    low, high = float(x.min()), float(x.max())
    high = high if high > low else low + 1
    for i in range(len(x)):
        for row, batch in ((0, x), (1, r)):
            ax = axes[row, i]
            image = batch[i]
            if image.shape[0] == 3:  # RGB, scaled to the originals' range
                ax.imshow(np.clip((image.transpose(1, 2, 0) - low) / (high - low), 0, 1))
            else:  # one channel (the first, for other channel counts), grey
                ax.imshow(image[0], cmap="gray_r", vmin=low, vmax=high,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        if labels is not None:
            axes[0, i].set_title(str(labels[i]), fontsize=9)
    axes[0, 0].set_ylabel("original", fontsize=9)
    axes[1, 0].set_ylabel("reconstructed", fontsize=9)


def _lines(axes, x, r, labels):
    features = 1 if x.ndim == 2 else min(x.shape[2], 3)
    colours = ("tab:blue", "tab:orange", "tab:green")
    for i, ax in enumerate(axes):
        if i >= len(x):
            ax.set_axis_off()
            continue
        for f in range(features):
            xs = x[i] if x.ndim == 2 else x[i, :, f]
            rs = r[i] if r.ndim == 2 else r[i, :, f]
            ax.plot(xs, color="black", linewidth=1.2, label="original" if f == 0 else None)
            ax.plot(rs, color=colours[f], linewidth=1.2, linestyle="--",
                    label="reconstructed" if f == 0 else None)
        ax.tick_params(labelsize=7)
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=9)
    axes[0].legend(fontsize=7, loc="best")


def _save(fig, path: Path) -> None:
    from zoo.atomic import atomic_open

    with atomic_open(path) as f:
        fig.savefig(f, format=path.suffix.lower().lstrip("."), dpi=110)


def plot_run(run, path, *, split: str = "test") -> int:
    """Reconstructions of a trained ``zoo.run.Run``'s test examples; returns how many."""
    if run.spec.task != "reconstruct":
        raise ConfigError(f"--plot draws reconstructions; architecture {run.architecture.name} "
                          f"does not reconstruct (task {run.spec.task})")
    data = run.dataset
    x, y = (data.x_test, data.y_test) if split == "test" else (run.x_val, run.y_val)
    labelled = data.task == "classify" and y is not None
    idx = pick_examples(len(x), y if labelled else None)
    originals = x[idx]
    outputs = run.model.forward(np.ascontiguousarray(originals, dtype=run.model.dtype))
    reconstructions = np.asarray(run.loss.activate(outputs)).reshape(originals.shape)
    names = None
    if labelled:
        classes = data.classes
        names = [str(classes[k]) if classes and k < len(classes) else str(k) for k in y[idx]]
    plot_reconstructions(originals, reconstructions, path, labels=names,
                         title=f"{run.architecture.name} on {data.name}: {split} examples")
    return len(idx)
