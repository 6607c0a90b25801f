"""qnnpipeline.viz: figures saved as PNG + PDF; captions gathered into one index."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qnnpipeline import viz  # noqa: E402


def test_savefig_writes_png_pdf_and_caption(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    written = viz.savefig(fig, "07_line", "A   falling\n line.")
    assert [p.name for p in written] == ["07_line.png", "07_line.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written[1].read_bytes()[:5] == b"%PDF-"
    assert viz.read_captions() == {"07_line": "A falling line."}


def test_index_gathers_every_notebook_sorted(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    viz.record_caption("02_b", "Second, first version.")
    viz.record_caption("01_a", "First\n   figure.")
    viz.record_caption("02_b", "Second, final version.")
    viz.main([])
    text = (tmp_path / "FIGURES.md").read_text()
    assert text.index("## 01_a") < text.index("## 02_b")
    assert "Second, final version." in text and "first version" not in text
    assert "![01_a](figures/01_a.png)" in text
