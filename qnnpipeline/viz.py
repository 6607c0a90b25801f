"""One look for every figure, and one way to save it (PNG at 300 dpi + PDF + caption)."""
from __future__ import annotations

import re

import matplotlib.pyplot as plt
import seaborn as sns

from . import paths

CAPTIONS_HEADER = ("# Figures\n\nEvery figure under `results/figures/` (PNG at 300 dpi and PDF), "
                   "with the notebook that draws it. Regenerate them all with `dvc repro`.\n")


def set_theme():
    """The project's seaborn theme: paper context, white grid, colour-blind palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "svg.hashsalt": "qnn", "figure.figsize": (6.0, 4.0)})


def savefig(fig, name: str, caption: str) -> list:
    """Save `fig` as results/figures/<name>.png (300 dpi) and .pdf, caption it in FIGURES.md.

    The PDF carries no creation date, so re-running a notebook rewrites an identical file.
    """
    folder = paths.results("figures")
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    fig.savefig(png, dpi=300, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    record_caption(name, caption)
    return [png, pdf]


def record_caption(name: str, caption: str) -> None:
    """Insert or replace the entry for `name` in results/FIGURES.md, kept sorted by name."""
    index = paths.results_dir() / "FIGURES.md"
    entries = _read_captions(index.read_text()) if index.exists() else {}
    entries[name] = " ".join(caption.split())
    body = "".join(f"\n## {key}\n\n![{key}](figures/{key}.png) ([PDF](figures/{key}.pdf))\n\n{text}\n"
                   for key, text in sorted(entries.items()))
    index.write_text(CAPTIONS_HEADER + body)


def _read_captions(text: str) -> dict:
    pattern = re.compile(r"^## (\S+)\n\n!\[.*?\n\n(.*?)(?=\n## |\Z)", re.S | re.M)
    return {name: caption.strip() for name, caption in pattern.findall(text)}
