"""Every experiment runs in --quick mode, and every notebook executes cleanly."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pandas as pd
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if p.name != "common.py")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_quick(script, tmp_path):
    """The script exits 0, prints its table and writes a CSV and a PNG (seed claims: all hold)."""
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--backend", "serial", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    csvs = list(tmp_path.glob("*.csv"))
    assert csvs and all(len(pd.read_csv(c)) > 0 for c in csvs)
    assert list(tmp_path.glob("*.png"))
    if script.stem == "seed_claims":  # each claim, and each expected failure, as expected
        claims = pd.read_csv(tmp_path / "seed_claims.csv")
        assert claims["holds"].all(), claims.to_string()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path):
    """The notebook is stored without outputs and runs top to bottom without an error."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
