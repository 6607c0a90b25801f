"""One look for every figure, one way to save it (PNG at 300 dpi + PDF), and the figure
index: each notebook records its captions in results/figures/<NN>_captions.json, and one
stage (`python -m qnnpipeline.viz`) builds results/FIGURES.md from all of them."""
from __future__ import annotations

import argparse
import contextlib
import json

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from . import paths

CAPTIONS_HEADER = ("# Figures\n\nEvery figure under `results/figures/` (PNG at 300 dpi and PDF), "
                   "with the notebook that draws it. Regenerate them all with `dvc repro`.\n")


def set_theme():
    """The project's seaborn theme: paper context, white grid, colour-blind palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "svg.hashsalt": "qnn", "figure.figsize": (6.0, 4.0)})


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """NumPy's global generator seeded for the block and restored after it. Seaborn's jitter
    (`stripplot`) draws from it, and the trainings a notebook runs in its own process leave
    it in a state that depends on which runs happened to run there."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def savefig(fig, name: str, caption: str) -> list:
    """Save `fig` as results/figures/<name>.png (300 dpi) and .pdf, and record its caption.

    The PDF carries no creation date, so re-running a notebook rewrites an identical file.
    """
    png, pdf = paths.output("figures", f"{name}.png"), paths.output("figures", f"{name}.pdf")
    fig.savefig(png, dpi=300, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None, "Creator": None})
    record_caption(name, caption)
    return [png, pdf]


def captions_file(name: str):
    """results/figures/<NN>_captions.json: the captions of notebook NN's figures."""
    prefix = name.split("_", 1)[0]
    return paths.output("figures", f"{prefix}_captions.json")


def record_caption(name: str, caption: str) -> None:
    """Insert or replace the caption of figure `name` in its notebook's captions file."""
    index = captions_file(name)
    entries = json.loads(index.read_text()) if index.exists() else {}
    entries[name] = " ".join(caption.split())
    index.write_text(json.dumps(dict(sorted(entries.items())), indent=1, ensure_ascii=False) + "\n")


def read_captions() -> dict:
    """Every recorded caption, {figure name: caption}, sorted by name."""
    entries = {}
    for index in sorted(paths.results("figures").glob("*_captions.json")):
        entries.update(json.loads(index.read_text()))
    return dict(sorted(entries.items()))


def figures_markdown(captions: dict) -> str:
    """results/FIGURES.md: one section per figure, image, PDF link and caption."""
    body = "".join(f"\n## {key}\n\n![{key}](figures/{key}.png) ([PDF](figures/{key}.pdf))\n\n{text}\n"
                   for key, text in captions.items())
    return CAPTIONS_HEADER + body


def main(argv=None) -> None:
    """`python -m qnnpipeline.viz`: write results/FIGURES.md from the captions files."""
    argparse.ArgumentParser(description=main.__doc__).parse_args(argv)
    index = paths.output("", "FIGURES.md")
    index.write_text(figures_markdown(read_captions()))
    print(f"wrote {paths.relative(index)}")


if __name__ == "__main__":
    main()
