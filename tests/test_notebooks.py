"""Every notebook in ``notebooks/`` runs top to bottom, on a small slice of the example.

Each notebook reads its data size from ``EMBEDKIT_NOTEBOOK_ROWS`` (unset: the full run whose outputs are
committed). Here it is small, the kernel is this interpreter (a kernelspec written for the test, so no
set-up by hand and no other Python on the machine is picked up), the working directory is a temporary
one (no ``mlflow.db`` or ``mlruns/`` lands in the repository), and any error in any cell fails the test.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_embeddings_for_trees_and_knn", "03_mlflow_and_serving"]
ROWS = "5000"
KERNEL = "embedkit-test"
#: seconds one cell may take (the slowest, the pipeline run of notebook 03, takes 20-30 s on 2 busy cores)
CELL_TIMEOUT = 300
#: set for the kernel (and so for every process it starts): finds a service a notebook left running
MARKER = "EMBEDKIT_NOTEBOOK_TEST_RUN"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec that runs ipykernel on this very interpreter (the project's virtual environment)."""
    root = tmp_path_factory.mktemp("kernels")
    (root / KERNEL).mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "embedkit (tests)",
        "language": "python",
    }
    (root / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


def processes_marked(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != psutil.Process().pid and proc.environ().get(MARKER) == token:
                found.append(proc)
    return found


def repo_outputs() -> set[str]:
    """What a notebook run could leave in the repository: MLflow's stores and anything in notebooks/."""
    names = {n for n in ("mlflow.db", "mlruns", "mlartifacts", "runs") if (ROOT / n).exists()}
    return names | {f"notebooks/{p.name}" for p in NOTEBOOK_DIR.iterdir()}


def image_count(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_the_three_notebooks_are_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_specs: KernelSpecManager
) -> None:
    token = uuid.uuid4().hex
    monkeypatch.setenv("EMBEDKIT_NOTEBOOK_ROWS", ROWS)
    monkeypatch.setenv(MARKER, token)
    # The cores are shared (CI runners, other jobs): one OpenMP thread each for torch, LightGBM and BLAS, and
    # threads that sleep rather than spin while they wait. Spinning threads on busy cores made torch and
    # LightGBM 5-15x slower here.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    before = repo_outputs()
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on any error
    finally:
        if km.has_kernel:  # a kernel manager passed in is ours to shut down (politely: atexit hooks run)
            km.shutdown_kernel()
        # whatever the kernel started must have gone with it
        _, left = psutil.wait_procs(processes_marked(token), timeout=20)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    assert not left, f"{path.name} left processes running: {[p.pid for p in left]}"
    assert image_count(nb) >= 1, f"{path.name} showed no plot"
    assert repo_outputs() <= before, f"{path.name} wrote into the repository: {repo_outputs() - before}"
