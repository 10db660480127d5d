"""The model bundle: a directory with JSON + safetensors (no pickle) that rebuilds the net on any device.

Layout::

    manifest.json        format version, feature spec, target, architecture, configs, metrics, checksums
    preprocessor.json    the fitted Preprocessor's state
    model.safetensors    the net's weights
    tables/              the embedding tables (the export format of embedkit.tables)
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_dir, read_json_file, sha256_file
from ._version import __version__
from .exceptions import FormatError
from .preprocessing import Preprocessor
from .target import TargetInfo

BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREPROCESSOR = "preprocessor.json"
WEIGHTS = "model.safetensors"
TABLES = "tables"


@dataclass
class BundleContents:
    """What a bundle holds, before the weights are turned into a torch module."""

    path: Path
    manifest: dict[str, Any]
    preprocessor: Preprocessor
    target: TargetInfo

    @property
    def architecture(self) -> dict[str, Any]:
        return self.manifest["architecture"]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def tables_path(self) -> Path:
        return self.path / TABLES


def save_bundle(
    path: str | Path,
    *,
    preprocessor: Preprocessor,
    target: TargetInfo,
    model: Any,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    history: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    source: str | None = None,
) -> Path:
    """Write a bundle atomically: everything is built in a temporary directory, then renamed into place."""
    from safetensors.torch import save

    from .tables import tables_from_preprocessor, write_tables

    path = Path(path)
    with atomic_dir(path) as tmp:
        (tmp / PREPROCESSOR).write_text(json.dumps(preprocessor.to_dict(), indent=1))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # save() to bytes, not save_file(): the Rust writer creates its file 0o600 whatever the umask
        (tmp / WEIGHTS).write_bytes(save(state))
        weights = {c: w.numpy() for c, w in model.embedding_weights().items()}
        write_tables(
            tmp / TABLES, tables_from_preprocessor(preprocessor, weights), source=source or str(path)
        )
        manifest = {
            "format_version": BUNDLE_FORMAT_VERSION,
            "kind": "embedkit.bundle",
            "embedkit_version": __version__,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
            "feature_spec": preprocessor.spec_.to_dict(),
            "target": target.to_dict(),
            "architecture": model.architecture(),
            "train_config": train_config or {},
            "metrics": metrics or {},
            "history": history or {},
            "extra": extra or {},
            "files": {
                PREPROCESSOR: sha256_file(tmp / PREPROCESSOR),
                WEIGHTS: sha256_file(tmp / WEIGHTS),
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def read_bundle(path: str | Path, verify: bool = True) -> BundleContents:
    """Read and check a bundle's manifest and preprocessor (no torch needed)."""
    path = Path(path)
    manifest = read_json_file(path / MANIFEST, f"{path} is not a model bundle: {MANIFEST} is missing")
    if manifest.get("kind") != "embedkit.bundle":
        raise FormatError(f"{path} is not an embedkit model bundle")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise FormatError(
            f"bundle {path} has format_version {manifest.get('format_version')!r}; this embedkit "
            f"({__version__}) reads version {BUNDLE_FORMAT_VERSION}"
        )
    if verify:
        for name, digest in manifest.get("files", {}).items():
            f = path / name
            if not f.exists():
                raise FormatError(f"bundle {path} is incomplete: {name} is missing")
            if sha256_file(f) != digest:
                raise FormatError(f"bundle file {f} is damaged or was modified (sha256 mismatch)")
    try:
        pre = Preprocessor.from_dict(json.loads((path / PREPROCESSOR).read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path / PREPROCESSOR} is damaged: {exc}") from exc
    return BundleContents(path, manifest, pre, TargetInfo.from_dict(manifest["target"]))
