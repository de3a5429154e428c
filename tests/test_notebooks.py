"""The notebooks execute top to bottom on real data with a small budget, so they cannot go stale."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_feed_quality_notebook_runs_on_lastfm(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    monkeypatch.setenv("SHARERANK_NB_MODELS", "auto,popularity,itemknn,lightgcn,sharegnn")
    monkeypatch.setenv("SHARERANK_NB_MAX_SECONDS", "8")
    monkeypatch.setenv("SHARERANK_NB_BUDGET", "30")
    notebook = nbformat.read(NOTEBOOKS / "feed_quality.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
                   ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # validation search, Recall@k curves, training curves, popularity bias
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert "sharegnn" in texts and "lightgcn" in texts
    assert "chosen:" in texts and "over the runner-up" in texts  # the validation search's winner and margin


def test_seeding_notebook_runs_on_a_small_world(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_NB_USERS", "1500")
    monkeypatch.setenv("SHARERANK_NB_K", "10")
    monkeypatch.setenv("SHARERANK_NB_RUNS", "300")
    from sharerank.training.sources.importers import import_cascade_log

    import_cascade_log(shared_data / "christianity", tmp_path / "christianity")
    monkeypatch.setenv("SHARERANK_NB_CASCADES", str(tmp_path / "christianity"))
    notebook = nbformat.read(NOTEBOOKS / "seeding.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # reach vs k, communities, predicted vs replayed reach on christianity
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 3
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    for expected in ("oracle", "pagerank", "koc", "spammer", "reasons", "within_20pct", "hits@100",
                     "most_active_adopters"):
        assert expected in texts
