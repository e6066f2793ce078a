"""The notebook runs top to bottom on generated images, with its parameters from the environment."""

import sys
from pathlib import Path

import pytest
from helpers import read_csv_dir

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "fruits_on_spark.ipynb"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_and_writes_its_outputs(tmp_path, weights_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from fruitlake.sample_data import write_sample_data

    write_sample_data(tmp_path / "in", classes=3, per_class=8, seed=3)
    output = tmp_path / "out"
    # The kernel is a child process: it inherits these as the notebook's parameters.
    for name, value in {
        "FRUITLAKE_INPUT": str(tmp_path / "in"),
        "FRUITLAKE_OUTPUT": str(output),
        "FRUITLAKE_WEIGHTS": weights_path,
        "FRUITLAKE_MASTER": "local[2]",
        "FRUITLAKE_K": "4",
        "FRUITLAKE_BATCH_SIZE": "8",
        "FRUITLAKE_DRIVER_MEMORY": "1g",
    }.items():
        monkeypatch.setenv(name, value)
    # Kernel "python3" from this environment first (not a user's own spec): jupyter_client starts its
    # `python` as this interpreter, the venv's.
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [
        out
        for out in outputs
        if out.output_type in ("display_data", "execute_result") and "image/png" in out.get("data", {})
    ]
    assert len(images) >= 5  # variance, projection, thumbnails, labels, confusion: inline
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "24 images through the network" in text and "k=4 keeps" in text and "accuracy" in text

    table = read_csv_dir(output / "pca_csv")
    assert len(table) == 24 and list(table.columns) == [
        "path",
        "label",
        "split",
        "pc_1",
        "pc_2",
        "pc_3",
        "pc_4",
    ]
    assert table["path"].is_monotonic_increasing
    assert set(table["label"]) == {"Apple Braeburn", "Banana", "Kiwi"}
    assert list((output / "features").glob("*.parquet")) and (output / "pca_model" / "metadata").exists()
    assert (output / "rejects").exists() and not (output / "_staging").exists()
