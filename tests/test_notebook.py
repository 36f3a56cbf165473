"""The README's notebook example, run as a notebook: each paragraph a cell, in a real Jupyter kernel (ipykernel),
where stderr is not a terminal and the root logger has no handler."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_DIR = "/tmp/api_demo"  # Where the README's example writes; the test writes under tmp_path instead.


def readme_cells() -> list[str]:
    with open(os.path.join(REPO, "README.md")) as f:
        section = f.read().split("## In a notebook", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [cell.strip() for cell in code.split("\n\n") if cell.strip()]


def stderr_of(cell) -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stderr")


@pytest.mark.slow  # A kernel, a build and a training run.
def test_the_readmes_notebook_example_runs_in_a_kernel_with_progress_and_results_shown(tmp_path):
    cells = [cell.replace(README_DIR, str(tmp_path)) for cell in readme_cells()]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}).execute()

    by_call = {name: next(c for c in notebook.cells if name in c.source) for name in ("build_dataset", "train_model")}
    build_err = stderr_of(by_call["build_dataset"])
    assert re.search(r"\] built \S+/catsdogs: files_seen=\d+, written=\d+", build_err), build_err[-2000:]
    assert "] train per class: cat=" in build_err
    train_err = stderr_of(by_call["train_model"])
    assert train_err.count("] epoch 2/2 (train): train_loss=") == 1, train_err[-2000:]
    assert re.search(r"epoch 1/2 \(train\)\s+\d+%\|", train_err), "a kernel's stderr shows the bar"
    shown = [o for c in notebook.cells for o in c.outputs if o["output_type"] in ("execute_result", "display_data")]
    assert any("image/png" in o["data"] for o in shown), "the grids render inline"

    def result(call: str) -> str:
        cell = next(c for c in notebook.cells if call in c.source)
        return next(o["data"]["text/plain"] for o in cell.outputs if o["output_type"] == "execute_result")

    two_classes = r"\[\('(cat|dog)', 0\.\d+\), \('(cat|dog)', 0\.\d+\)\]"
    assert re.fullmatch(two_classes, result("Cat/1.jpg")), result("Cat/1.jpg")
    assert re.fullmatch(r"\[\[\('(cat|dog)', 0\.\d+\)\], \[\('(cat|dog)', 0\.\d+\)\]\]", result("top_k=1"))
    assert result("report[").startswith("{'train': ")
    assert (tmp_path / "run" / "eval" / "test_mistakes.json").is_file()
    assert (tmp_path / "catsdogs.png").is_file(), "the grids go where the example says, not into the repository"
