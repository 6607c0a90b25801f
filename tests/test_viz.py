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


def jittered_points(seed):
    import seaborn as sns

    fig, ax = plt.subplots()
    with viz.seeded_numpy(seed):
        sns.stripplot(x=[0, 0, 0, 1, 1, 1], y=[1.0, 2.0, 3.0, 1.0, 2.0, 3.0], jitter=0.2, ax=ax)
    points = [collection.get_offsets().copy() for collection in ax.collections]
    plt.close(fig)
    return points


def test_seeded_numpy_fixes_seaborns_jitter_whatever_ran_before_and_restores_the_state():
    import numpy as np

    np.random.seed(1)
    first = jittered_points(0)
    np.random.seed(2)  # as a training in the notebook's process would leave it
    after = np.random.get_state()[1].copy()
    second = jittered_points(0)
    assert np.array_equal(np.random.get_state()[1], after)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, jittered_points(1), strict=True))
