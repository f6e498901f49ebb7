"""The research notebooks in docs/notebooks run from top to bottom, and are committed executed.

Each notebook runs in a fresh `python3` kernel with docs/notebooks as its working directory, on
generated audio and the bundled model. The committed copies must carry their outputs (a reader
on the web sees the plots without running anything), so a notebook saved unexecuted fails here.
After changing the library, refresh the saved outputs with `python -m tests.test_notebooks`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to run the notebooks "
                               '(pip install "lightning-align[test]")')
nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks "
                               '(pip install "lightning-align[test]")')

NOTEBOOKS = Path(__file__).resolve().parent.parent / "docs" / "notebooks"
NAMES = ("quickstart.ipynb", "attention.ipynb", "accuracy.ipynb")
PLOTS = {"quickstart.ipynb": 0, "attention.ipynb": 3, "accuracy.ipynb": 1}
CELL_TIMEOUT_S = 600


def _images(book) -> int:
    return sum(1 for cell in book.cells if cell.cell_type == "code"
               for out in cell.get("outputs", ()) if "image/png" in out.get("data", {}))


def _errors(book) -> list[str]:
    return [f"{out.get('ename')}: {out.get('evalue')}" for cell in book.cells if cell.cell_type == "code"
            for out in cell.get("outputs", ()) if out.get("output_type") == "error"]


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_with_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), \
        f"{name} is saved unexecuted: run it and save it with its outputs"
    assert not _errors(book)
    assert _images(book) == PLOTS[name]


def execute(name: str):
    """Run the notebook `name` in a fresh kernel; returns it with its new outputs. Raises
    `nbclient.exceptions.CellExecutionError`, naming the cell, on the first error."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return book


@pytest.mark.parametrize("name", NAMES)
def test_runs(name):
    book = execute(name)
    assert not _errors(book)
    assert _images(book) == PLOTS[name]


if __name__ == "__main__":
    import sys
    import time

    for name in sys.argv[1:] or NAMES:
        started = time.perf_counter()
        nbformat.write(execute(name), NOTEBOOKS / name)
        print(f"{name}: executed and saved in {time.perf_counter() - started:.0f} s")
