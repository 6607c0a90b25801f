"""Sphinx + MyST-NB configuration of the book (`make book`): the executed notebooks of
results/notebooks/ rendered as they are stored (never re-executed), numbered figures,
claims; offline (MathJax served from the build, no CDN).

Build from the project root: `sphinx-build -c book . book/_build/html`.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import jupyter_server_mathjax

BOOK = Path(__file__).resolve().parent
sys.path.insert(0, str(BOOK))
import pages  # noqa: E402

pages.write()

project = "qnn-replication"
author = "qnn-replication contributors"
copyright = "the qnn-replication contributors (MIT licence)"
root_doc = "book/index"
include_patterns = ["book/*.md", "results/notebooks/*.ipynb"]
exclude_patterns = ["book/_build"]

extensions = ["myst_nb"]
nb_execution_mode = "off"                 # render the stored outputs; nothing runs
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "substitution"]
myst_heading_anchors = 3


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=BOOK, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


myst_substitutions = {"commit": _commit()}

smartquotes = False                       # captions exactly as in results/FIGURES.md
numfig = True
numfig_format = {"figure": "Figure %s"}
numfig_secnum_depth = 0

html_theme = "sphinx_book_theme"
html_title = "QNN replication"
html_theme_options = {"show_toc_level": 2, "use_download_button": False,
                      "use_fullscreen_button": False, "home_page_in_toc": True}
html_last_updated_fmt = None
html_show_sphinx = False
html_copy_source = False
html_extra_path = ["redirect"]            # /index.html -> book/index.html

# MathJax 2 from the jupyter-server-mathjax wheel, copied into the site: no CDN.
_MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
_STATIC = BOOK / "_build" / "mathjax-static"
if not (_STATIC / "mathjax" / "MathJax.js").is_file():
    shutil.copytree(_MATHJAX, _STATIC / "mathjax", dirs_exist_ok=True)
html_static_path = [str(_STATIC), "static"]
html_css_files = ["print.css"]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                               "processEscapes": True, "processClass": "math|output_area",
                               "ignoreClass": "document"},
                   # the wheel's MathJax is Jupyter's trimmed copy: STIX-Web fonts only
                   "HTML-CSS": {"availableFonts": [], "preferredFont": None,
                                "webFont": "STIX-Web", "imageFont": None},
                   "showMathMenu": False, "messageStyle": "none"}
