"""The notebooks execute top to bottom on real data with a small budget, so they cannot go stale; the committed
ones carry their outputs (`make notebooks`), pictures included, without volatile metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IMAGES = {
    # validation search, Recall@k curves, training curves, popularity bias
    "feed_quality.ipynb": 4,
    # reach vs k with 95% intervals, communities, predicted vs real reach and replayed reach on christianity
    "seeding.ipynb": 4,
}
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")


def outputs_of(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def images_in(outputs: list[nbformat.NotebookNode]) -> int:
    return len([o for o in outputs if "image/png" in o.get("data", {})])


def test_feed_quality_notebook_runs_on_lastfm(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folders, removed with tmp_path
    monkeypatch.setenv("SHARERANK_NB_MODELS", "auto,popularity,itemknn,lightgcn,sharegnn")
    monkeypatch.setenv("SHARERANK_NB_MAX_SECONDS", "8")
    monkeypatch.setenv("SHARERANK_NB_BUDGET", "30")
    notebook = nbformat.read(NOTEBOOKS / "feed_quality.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
                   ).execute()
    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert images_in(outputs) == IMAGES["feed_quality.ipynb"]
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert "sharegnn" in texts and "lightgcn" in texts
    assert "chosen:" in texts and "over the runner-up" in texts  # the validation search's winner and margin


def test_seeding_notebook_runs_on_a_small_world(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folders, removed with tmp_path
    monkeypatch.setenv("SHARERANK_NB_USERS", "1500")
    monkeypatch.setenv("SHARERANK_NB_K", "10")
    monkeypatch.setenv("SHARERANK_NB_RUNS", "300")
    from sharerank.training.sources.importers import import_cascade_log

    import_cascade_log(shared_data / "christianity", tmp_path / "christianity")
    monkeypatch.setenv("SHARERANK_NB_CASCADES", str(tmp_path / "christianity"))
    notebook = nbformat.read(NOTEBOOKS / "seeding.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert images_in(outputs) == IMAGES["seeding.ipynb"]
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    for expected in ("oracle", "pagerank", "koc", "spammer", "reasons", "within_20pct", "hits@100",
                     "most_active_adopters"):
        assert expected in texts


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_committed_notebook_carries_its_pictures(name: str) -> None:
    """What a browser shows: the executed outputs, every picture, no error, no volatile metadata."""
    assert sorted(IMAGES) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = outputs_of(notebook)
    # every code cell after the first (imports and settings) prints or plots something
    assert all(cell.get("outputs") for cell in code[1:]), f"{name} is committed without outputs: run `make notebooks`"
    assert images_in(outputs) == IMAGES[name], f"{name} is committed without its pictures: run `make notebooks`"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    for cell in code:
        assert cell.get("execution_count") is None
        assert not set(VOLATILE_CELL_METADATA) & set(cell.metadata), cell.metadata
    assert not {"widgets", "signature"} & set(notebook.metadata)
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert "/tmp/" not in texts  # no temporary folder of the run that made them


def test_committed_notebooks_are_stripped() -> None:
    """`nbstripout --keep-output` would change nothing: only the outputs of `make notebooks` are committed."""
    nbstripout = Path(sys.executable).parent / "nbstripout"
    if not nbstripout.exists():
        pytest.skip("nbstripout is not installed beside this Python")
    notebooks = sorted(str(path) for path in NOTEBOOKS.glob("*.ipynb"))
    result = subprocess.run([str(nbstripout), "--keep-output", "--verify", *notebooks], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
