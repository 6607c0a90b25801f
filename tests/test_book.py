"""`make book`: the executed notebooks, every figure (numbered, captioned, anchored, with the
command that regenerates it), the claims table and "What is not reproduced", built offline
without executing anything; then looked at in headless Chromium with the internet blocked."""
import html as html_module
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qnnpipeline import paths

ROOT = paths.root()
sys.path.insert(0, str(ROOT / "book"))
import browser  # noqa: E402
import pages  # noqa: E402

FIGURES = sorted(p.stem for p in (ROOT / "results" / "figures").glob("*.png"))
NOTEBOOKS = sorted(p.stem for p in (ROOT / "results" / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "html"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-c", "book", ".",
                            str(out)], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    return out


def test_captions_are_read_from_the_figure_index():
    text = ("# Figures\n\nintro\n\n## 01_a\n\n![01_a](figures/01_a.png) ([PDF](figures/01_a.pdf))\n\n"
            "First caption,\nwrapped.\n\n## 02_b\n\n![02_b](figures/02_b.png)\n\nSecond.\n")
    assert pages.captions(text) == {"01_a": "First caption, wrapped.", "02_b": "Second."}
    assert pages.figure_id("01_hard_sigmoid") == "fig-01-hard-sigmoid"


def test_not_reproduced_page_has_a_placeholder(tmp_path):
    (tmp_path / "README.md").write_text("# x\n\n## Claims\n\nnone\n")
    assert "not written yet" in pages.not_reproduced_page(tmp_path)
    (tmp_path / "README.md").write_text("# x\n\n## What is not reproduced\n\nCIFAR-10.\n\n## Next\n")
    assert pages.not_reproduced_page(tmp_path).endswith("# What is not reproduced\n\nCIFAR-10.\n")


def test_every_figure_is_numbered_captioned_anchored_with_its_command(site):
    html = (site / "book" / "figures.html").read_text()
    captions = pages.captions((ROOT / "results" / "FIGURES.md").read_text())
    stages = pages.stages_by_output((ROOT / "dvc.yaml").read_text())
    numbers = re.findall(r'<span class="caption-number">Figure (\d+)', html)
    assert numbers == [str(i) for i in range(1, len(FIGURES) + 1)]
    for name in FIGURES:
        anchor = html.index(f'id="{pages.figure_id(name)}"')
        figure = html[anchor:html.index("</figure>", anchor)]
        text = " ".join(html_module.unescape(re.sub(r"<[^>]+>", " ", figure)).split())
        assert f"results/figures/{name}.png" in text
        assert " ".join(captions[name].split())[:60] in text, name
        assert f"dvc repro {stages[f'results/figures/{name}.png']}" in text
        image = re.search(r'<img alt="[^"]*" src="([^"]+)"', figure).group(1)
        assert (site / "book" / image).resolve().is_file(), image


def test_claims_not_reproduced_and_notebooks_are_in_the_book(site):
    claims = (site / "book" / "claims.html").read_text()
    assert "<table" in claims and "MNIST test error" in claims
    assert "What is not reproduced" in (site / "book" / "not_reproduced.html").read_text()
    for name in NOTEBOOKS:
        assert (site / "results" / "notebooks" / f"{name}.html").is_file()
    index = (site / "book" / "index.html").read_text()
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    assert f"Built from commit {commit or 'unknown'}" in index


def test_the_site_loads_nothing_from_the_internet(site):
    remote = re.compile(r'<(?:script|img|link)[^>]+(?:src|href)="(?:https?:)?//[^"]+"')
    offenders = {str(p.relative_to(site)): remote.findall(p.read_text())
                 for p in site.rglob("*.html") if remote.search(p.read_text())}
    assert not offenders


@pytest.mark.browser
def test_figure_page_in_a_browser_and_pdf(site, tmp_path):
    if not browser.chromium_path():
        pytest.skip("no chromium on PATH: `make browser-deps` (Debian's chromium, needs root)")
    pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[book]'")
    figures = site / "book" / "figures.html"
    with browser.offline_page() as (page, blocked, failed):
        page.goto(figures.as_uri() + "#" + pages.figure_id(FIGURES[0]), wait_until="load")
        images = page.locator("figure img")
        assert images.count() == len(FIGURES)
        for i in range(images.count()):
            images.nth(i).scroll_into_view_if_needed()
            assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 100"), f"image {i}"
        page.locator(f"#{pages.figure_id(FIGURES[0])}").screenshot(path=str(tmp_path / "figure.png"))
        page.goto((site / "book" / "index.html").as_uri(), wait_until="load")
        browser.wait_for_mathjax(page)
        assert not blocked, f"requests to the internet: {blocked[:5]}"
        assert not failed, f"missing local files: {failed[:5]}"
    assert (tmp_path / "figure.png").stat().st_size > 10_000

    from pypdf import PdfReader

    pdf = tmp_path / "book.pdf"
    assert browser.print_pdf(site, pdf, pages=[site / "book" / "index.html", site / "book" / "claims.html"]) == []
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Quantized Neural" in text and "MNIST test" in text
    assert [p.name for p in browser.book_pages(site)][:4] == ["index.html", "claims.html", "not_reproduced.html",
                                                                "figures.html"]


def test_make_plots_renders_every_dvc_plot_offline(tmp_path):
    """`make plots`: every plot of dvc.yaml as PNG and SVG, and a page with no script at all."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import offline_plots
    import yaml

    expected = {next(iter(plot)) for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]}
    assert offline_plots.main(["--out", str(tmp_path)]) == 0
    for name in expected:
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000, name
        assert "<svg" in (tmp_path / f"{name}.svg").read_text()[:500]
    index = (tmp_path / "index.html").read_text()
    assert "<script" not in index and all(f'src="{name}.svg"' in index for name in expected)
    assert offline_plots.dvc_plot_specs(["no/such/plot.csv"]) == {}
    assert offline_plots.main(["--out", str(tmp_path / "none"), "--targets", "no/such/plot.csv"]) == 1
