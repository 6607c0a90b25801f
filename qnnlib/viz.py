"""One look for every figure, and one way to save it (PNG at 300 dpi + PDF)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from . import paths


def set_theme():
    """The project's seaborn theme: paper context, white grid, colour-blind palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "svg.hashsalt": "qnn", "figure.figsize": (6.0, 4.0)})


def savefig(fig, name: str) -> list:
    """Save `fig` as results/figures/<name>.png (300 dpi) and .pdf; return both paths.

    The PDF has no creation date, so re-running a notebook rewrites an identical file.
    """
    folder = paths.results("figures")
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    fig.savefig(png, dpi=300, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return [png, pdf]
