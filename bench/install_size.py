"""Disk size of a serving install (``embedkit[serve]``, no torch) against a full one (``embedkit[all]``).

Creates two fresh virtual environments under a temporary directory, installs the project into each
(the full one with the CPU build of torch first, as ``make install`` does), checks that the serving one
has no torch yet imports the service and ``embedkit score``, and prints and saves the sizes.

Run: ``python bench/install_size.py [--torch torch==2.13.0] [--out bench/results/install_size.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def make_venv(venv: Path, installs: list[list[str]]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    for args in installs:
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torch", default="torch==2.13.0", help="the torch requirement of the full install")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "install_size.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="embedkit-size-") as tmp:
        full, serve = Path(tmp) / "full", Path(tmp) / "serve"
        t_full = make_venv(full, [[args.torch], [f"{ROOT}[all]"]])
        t_serve = make_venv(serve, [[f"{ROOT}[serve]"]])
        py = str(serve / "bin" / "python")
        no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0
        smoke = subprocess.run(
            [py, "-c", "import service.app, pipelines.score, embedkit.inference; print('ok')"],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        sizes = {"full": du(site_packages(full)), "serve": du(site_packages(serve))}
        result = {
            "full_requirement": f"{args.torch} + embedkit[all]",
            "serve_requirement": "embedkit[serve]",
            "site_packages_bytes": sizes,
            "site_packages_mib": {k: round(v / 2**20, 1) for k, v in sizes.items()},
            "serve_fraction_of_full": round(sizes["serve"] / sizes["full"], 3),
            "install_seconds": {"full": round(t_full, 1), "serve": round(t_serve, 1)},
            "serve_has_no_torch": no_torch,
            "serve_imports_service_and_score": smoke.returncode == 0 and smoke.stdout.strip() == "ok",
            "python": sys.version.split()[0],
        }
    print("| install | site-packages | install time |\n|---|---:|---:|")
    for k in ("full", "serve"):
        print(f"| {result[k + '_requirement']} | {result['site_packages_mib'][k]:,} MiB | "
              f"{result['install_seconds'][k]} s |")  # fmt: skip
    print(f"serve / full = {result['serve_fraction_of_full']}; serve has no torch: {no_torch}; "
          f"imports service and score: {result['serve_imports_service_and_score']}")  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if no_torch and result["serve_imports_service_and_score"] else 1


if __name__ == "__main__":
    sys.exit(main())
