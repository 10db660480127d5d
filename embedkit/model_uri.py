"""Where a served or batch-scored model comes from: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a
local servable directory, resolved to a local servable directory.

The one module of embedkit that imports mlflow, and only inside :func:`download_registered` (see
``docs/design.md``, "Layers"). Both the service (``service/loader.py``) and batch scoring
(``pipelines/score.py``) call it, so neither imports the other. A registered model is the pipelines' pyfunc
model whose artifacts hold the servable directory (``artifacts/servable/``); its files are downloaded, never
unpickled: the servable is read with :func:`embedkit.servable.load_servable`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .exceptions import FormatError
from .servable import SERVABLE_FILE

REGISTRY_SCHEME = "models:/"
_ALIAS = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>[^@/]+)/?$")
_VERSION = re.compile(r"^models:/(?P<name>[^@/]+)/(?P<version>\d+)/?$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # the servable directory
    name: str
    version: str


def default_tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``MLFLOW_TRACKING_URI``, else the pipelines' ``./mlflow.db``."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def find_servable(root: Path) -> Path:
    """The servable directory inside a downloaded MLflow model (the pipelines': ``artifacts/servable/``)."""
    if (root / SERVABLE_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(SERVABLE_FILE) if p.is_file())
    preferred = [p for p in found if p.name == "servable" and p.parent.name == "artifacts"]
    if len(preferred) == 1:
        return preferred[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise FormatError(
            f"the registered model holds no embedkit servable ({SERVABLE_FILE} not found); "
            "register it with the pipelines' pyfunc model"
        )
    raise FormatError(f"the registered model holds {len(found)} servables; expected one")


def download_registered(uri: str, tracking_uri: str | None, cache_dir: Path) -> ResolvedModel:
    """Resolve ``models:/NAME@ALIAS`` (or ``/VERSION``) to a version and download it once into the cache."""
    # MLflow draws a "Downloading artifacts" progress bar per download unless told not to; in a server's
    # or a batch job's log it is noise. An explicit MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.artifacts
    from mlflow import MlflowClient

    alias = _ALIAS.match(uri)
    pinned = _VERSION.match(uri)
    if not (alias or pinned):
        raise ValueError(f"model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    t_uri = default_tracking_uri(tracking_uri)
    if alias:
        name = alias["name"]
        version = str(
            MlflowClient(tracking_uri=t_uri, registry_uri=t_uri)
            .get_model_version_by_alias(name, alias["alias"])
            .version
        )
    else:
        assert pinned is not None
        name, version = pinned["name"], pinned["version"]
    key = hashlib.sha256(f"{t_uri}\0{name}".encode()).hexdigest()[:16]
    target = cache_dir / key / version
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            # The version, not the alias: what is downloaded is what is reported, even if the alias moves now.
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=str(tmp),
                tracking_uri=t_uri,
                registry_uri=t_uri,
            )
            (tmp / ".complete").touch()
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(find_servable(target), name, version)


def resolve_local(uri: str) -> ResolvedModel:
    path = Path(uri.removeprefix("file://")).expanduser()
    meta_file = path / SERVABLE_FILE
    if not meta_file.is_file():
        raise FormatError(f"{path} is not an embedkit servable model ({SERVABLE_FILE} is missing)")
    import json

    meta = json.loads(meta_file.read_text())
    # A local directory has no registry version: the servable file's digest tells versions apart.
    version = hashlib.sha256(meta_file.read_bytes()).hexdigest()[:12]
    return ResolvedModel(path, str(meta.get("name") or path.name), version)
