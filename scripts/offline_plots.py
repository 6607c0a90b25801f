"""`make plots`: the learning curves of `dvc plots show`, viewable offline.

`dvc plots show` writes an HTML page that loads Vega from a CDN. This script asks DVC
for the same plots as Vega-Lite specifications with their data (`dvc plots show --json`)
and renders them with vl-convert, which bundles Vega and Vega-Lite: no network. It writes
`dvc_plots/offline/NAME.png` and `NAME.svg` for every plot of dvc.yaml, and an
`index.html` that shows the SVGs with no JavaScript at all.

    python scripts/offline_plots.py [--out dvc_plots/offline] [--targets FILE ...]
"""
from __future__ import annotations

import argparse
import html
import json
import subprocess
import sys
from pathlib import Path

import vl_convert


def dvc_plot_specs(targets: list[str] | None = None) -> dict[str, dict]:
    """{plot id: Vega-Lite spec with inline data}, as `dvc plots show --json` gives them."""
    command = [sys.executable, "-m", "dvc", "plots", "show", "--json", *(targets or [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    if report.get("errors"):
        raise RuntimeError(f"dvc plots show reported errors: {json.dumps(report['errors'])[:2000]}")
    return {name: plot["content"] for name, plots in report.get("data", {}).items()
            for plot in plots if plot.get("type") == "vega"}


def render(specs: dict[str, dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written, figures = [], []
    for name, spec in sorted(specs.items()):
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        png.write_bytes(vl_convert.vegalite_to_png(spec, scale=2))
        svg.write_text(vl_convert.vegalite_to_svg(spec))
        written += [png, svg]
        title = spec.get("title", name)
        title = title.get("text", name) if isinstance(title, dict) else title
        figures.append(f'<figure id="{html.escape(name)}"><img src="{svg.name}" alt="{html.escape(str(title))}">'
                       f'<figcaption>{html.escape(name)} (<a href="{png.name}">PNG</a>)</figcaption></figure>')
    index = out / "index.html"
    index.write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>DVC plots (offline)</title>"
                     "</head><body><h1>DVC plots</h1><p>The plots of dvc.yaml, rendered offline from "
                     "<code>dvc plots show --json</code> by <code>make plots</code>.</p>\n"
                     + "\n".join(figures) + "\n</body></html>\n")
    return written + [index]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dvc_plots/offline"))
    parser.add_argument("--targets", nargs="*", help="plot files or ids (default: all of dvc.yaml)")
    args = parser.parse_args(argv)
    specs = dvc_plot_specs(args.targets)
    if not specs:
        print("dvc plots show --json returned no plots", file=sys.stderr)
        return 1
    written = render(specs, args.out)
    print(f"wrote {len(specs)} plots to {args.out}/ (open {args.out / 'index.html'})")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
