import matplotlib.pyplot as plt

from qnnlib import viz


def test_savefig_writes_png_and_pdf_reproducibly(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    viz.set_theme()

    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 0, 1])
        written = viz.savefig(fig, "demo")
        plt.close(fig)
        return [p.read_bytes() for p in written], written

    first, written = draw()
    second, _ = draw()
    assert [p.suffix for p in written] == [".png", ".pdf"]
    assert all(p.parent == tmp_path / "figures" for p in written)
    assert first == second, "re-saving the same figure must give identical bytes"
