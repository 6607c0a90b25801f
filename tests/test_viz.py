import matplotlib.pyplot as plt

from qnnpipeline import viz


def _draw(name, caption):
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 0, 1])
    written = viz.savefig(fig, name, caption)
    plt.close(fig)
    return written


def test_savefig_writes_png_and_pdf_reproducibly(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    viz.set_theme()
    first = _draw("demo", "A demo.")
    first_bytes = [p.read_bytes() for p in first]
    second_bytes = [p.read_bytes() for p in _draw("demo", "A demo.")]
    assert [p.suffix for p in first] == [".png", ".pdf"]
    assert all(p.parent == tmp_path / "figures" for p in first)
    assert first_bytes == second_bytes, "re-saving the same figure must give identical bytes"


def test_captions_are_kept_sorted_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    viz.record_caption("b_second", "Second, first version.")
    viz.record_caption("a_first", "First\n   figure.")
    viz.record_caption("b_second", "Second, final version.")
    text = (tmp_path / "FIGURES.md").read_text()
    assert text.index("## a_first") < text.index("## b_second")
    assert "First figure." in text and "Second, final version." in text
    assert "first version" not in text
    assert viz._read_captions(text) == {"a_first": "First figure.", "b_second": "Second, final version."}
