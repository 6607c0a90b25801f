"""Headless Chromium (Debian's `chromium`, driven by Playwright) for the book and the tests:
no browser download, and no request leaves the machine (every other request is aborted
and recorded).

`python book/browser.py SITE OUT.pdf` prints the book's pages (built by Sphinx into the
folder SITE) to one PDF, in the order of the book's table of contents.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

MARGIN = {"top": "14mm", "bottom": "14mm", "left": "12mm", "right": "12mm"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def chromium_path() -> str | None:
    """The system Chromium: env QNN_CHROMIUM, else chromium / chromium-browser on PATH."""
    return os.environ.get("QNN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("file", "data", "blob", "about") or parsed.hostname in LOCAL_HOSTS


def is_fetched(url: str) -> bool:
    """A request for a file or a local server (not data:, blob: or about:blank), other than
    MathJax's probes for its TeX web fonts: Jupyter's trimmed MathJax has STIX-Web only, and
    falls back to it."""
    return (urlparse(url).scheme in ("file", "http", "https") and is_local(url)
            and "/mathjax/fonts/HTML-CSS/TeX/" not in url)


@contextmanager
def offline_page(viewport=(1280, 900)):
    """A Playwright page in headless system Chromium whose non-local requests are aborted;
    yields (page, blocked, failed): URLs blocked, and local requests that failed."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if not executable:
        raise FileNotFoundError("no chromium on PATH (apt-get install chromium, or set QNN_CHROMIUM)")
    blocked, failed = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.route("**/*", lambda route: route.continue_() if is_local(route.request.url)
                       else (blocked.append(route.request.url), route.abort())[1])
            page.on("requestfailed", lambda request: failed.append(request.url)
                    if is_fetched(request.url) else None)
            page.on("response", lambda response: failed.append(response.url)
                    if response.status >= 400 and is_fetched(response.url) else None)
            yield page, blocked, failed
        finally:
            browser.close()


def wait_for_mathjax(page) -> None:
    """Wait until MathJax 2 (if the page loads it) has typeset everything."""
    page.evaluate("() => new Promise(done => (window.MathJax && MathJax.Hub) ? MathJax.Hub.Queue(done) : done())")


def book_pages(site: Path) -> list[Path]:
    """The HTML pages of the book in reading order: the front page, then its table of
    contents (the links of the front page's toctrees)."""
    import re

    index = site / "book" / "index.html"
    links = re.findall(r'<li class="toctree-l1"><a class="reference internal" href="([^"#]+)"',
                       index.read_text())
    pages = [index] + [(index.parent / link).resolve() for link in dict.fromkeys(links)]
    return [page for page in pages if page.is_file()]


def print_pdf(site: Path, pdf: Path, pages: list[Path] | None = None) -> list[str]:
    """Print the book's pages (or `pages`) to one A4 `pdf`; return the blocked non-local URLs."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    with offline_page() as (page, blocked, failed):
        page.emulate_media(media="print")
        for html in pages or book_pages(Path(site)):
            page.goto(html.resolve().as_uri(), wait_until="load")
            wait_for_mathjax(page)
            writer.append(io.BytesIO(page.pdf(format="A4", print_background=True, margin=MARGIN)))
        if failed:
            raise RuntimeError(f"missing local files: {failed[:5]}")
    with open(pdf, "wb") as out:
        writer.write(out)
    return blocked


if __name__ == "__main__":
    site, out = Path(sys.argv[1]), Path(sys.argv[2])
    blocked = print_pdf(site, out)
    print(f"wrote {out}" + (f"; blocked {len(blocked)} internet requests: {blocked[:3]}" if blocked else ""))
