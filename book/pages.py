"""Pages of the book written from the committed results at build time (never by hand):

- `figures.md`: every figure of `results/figures/` as a numbered MyST figure with its
  caption (from `results/FIGURES.md`), a stable anchor `fig-<name>` and the command that
  regenerates it (the `dvc.yaml` stage that lists it as an output);
- `not_reproduced.md`: the README's "What is not reproduced" section.

`python book/pages.py` writes them into `book/` (git-ignored); `book/conf.py` does the same
before every build.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent   # book/figures.md, book/not_reproduced.md (git-ignored)
GENERATED = "% Written by book/pages.py from results/ and README.md at every build: do not edit.\n\n"
NOT_REPRODUCED = re.compile(r"^## What is not reproduced[^\n]*\n(.*?)(?=^## |\Z)", re.S | re.M)


def captions(figures_md: str) -> dict[str, str]:
    """{figure name: caption} from FIGURES.md: a `## name` heading per figure, then its
    image line(s) and the caption text."""
    entries = {}
    for block in re.split(r"^## ", figures_md, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        text = [line for line in body.strip().splitlines() if not line.lstrip().startswith("![")]
        entries[name.strip()] = " ".join(" ".join(text).split())
    return entries


def stages_by_output(dvc_yaml: str) -> dict[str, str]:
    """{output path: stage name} for every stage of dvc.yaml."""
    stages = yaml.safe_load(dvc_yaml).get("stages", {})
    owner = {}
    for stage, spec in stages.items():
        for entry in (spec.get("outs") or []) + (spec.get("metrics") or []):
            owner[next(iter(entry)) if isinstance(entry, dict) else entry] = stage
    return owner


def figure_id(name: str) -> str:
    """The HTML anchor of a figure: `fig-` + its file name with `_` as `-` (docutils ids)."""
    return "fig-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def figures_page(root: Path = ROOT) -> str:
    names = sorted(p.stem for p in (root / "results" / "figures").glob("*.png"))
    index = root / "results" / "FIGURES.md"
    text = captions(index.read_text()) if index.is_file() else {}
    owner = stages_by_output((root / "dvc.yaml").read_text())
    notebooks = {p.stem[:2]: p.stem for p in (root / "results" / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    lines = ["# Figures", "",
             "Every figure of `results/figures/` (PNG at 300 dpi, and PDF), numbered, with its caption "
             "from `results/FIGURES.md` and the command that regenerates it. Each has a stable anchor: "
             "`figures.html#fig-<file name, _ as ->`. To cite one, give its file, its caption and the "
             "commit of the book (on the front page).", ""]
    current = None
    for name in names:
        notebook = notebooks.get(name[:2])
        if notebook and notebook != current:
            current = notebook
            lines += [f"## {notebook}", "", f"Drawn by {{doc}}`/results/notebooks/{notebook}`.", ""]
        stage = owner.get(f"results/figures/{name}.png")
        command = f"`dvc repro {stage}`" if stage else "`dvc repro`"
        caption = text.get(name) or f"{name} (no caption in results/FIGURES.md)"
        lines += [f":::{{figure}} /results/figures/{name}.png", f":name: {figure_id(name)}",
                  f":alt: {name}", ":width: 100%", "",
                  caption, "",
                  f"`results/figures/{name}.png` ({{download}}`PDF </results/figures/{name}.pdf>`) · "
                  f"regenerate: {command}", ":::", ""]
    return GENERATED + "\n".join(lines)


def not_reproduced_page(root: Path = ROOT) -> str:
    match = NOT_REPRODUCED.search((root / "README.md").read_text())
    body = match.group(1).strip() if match else (
        "*This section is not written yet.* It will list what this replication does not "
        "reproduce, and why; it is taken from the README's \"What is not reproduced\" section.")
    return GENERATED + "# What is not reproduced\n\n" + body + "\n"


def write(out: Path = OUT, root: Path = ROOT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("figures.md", figures_page(root)), ("not_reproduced.md", not_reproduced_page(root))):
        path = out / name
        if not path.is_file() or path.read_text() != text:  # unchanged pages keep their mtime
            path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path.relative_to(ROOT), file=sys.stderr)
