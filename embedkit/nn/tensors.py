"""Model inputs as tensors: what the trainer consumes once the preprocessor has done its work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TensorData:
    """Model inputs as tensors: codes ``[n, n_cat]`` (int64), continuous ``[n, n_cont]`` (float32),
    target ``[n]`` (float32 or int64) and optional weights ``[n]``."""

    x_cat: torch.Tensor
    x_cont: torch.Tensor
    y: torch.Tensor | None = None
    w: torch.Tensor | None = None

    @classmethod
    def from_numpy(
        cls, codes: np.ndarray, cont: np.ndarray, y: np.ndarray | None = None, w: np.ndarray | None = None
    ) -> TensorData:
        return cls(
            torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(cont, dtype=np.float32)),
            None if y is None else torch.from_numpy(np.ascontiguousarray(y)),
            None if w is None else torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)),
        )

    def __len__(self) -> int:
        return int(self.x_cat.shape[0])

    def to(self, device: torch.device) -> TensorData:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return TensorData(mv(self.x_cat), mv(self.x_cont), mv(self.y), mv(self.w))  # type: ignore[arg-type]

    def take(self, idx: torch.Tensor) -> TensorData:
        return TensorData(
            self.x_cat[idx],
            self.x_cont[idx],
            None if self.y is None else self.y[idx],
            None if self.w is None else self.w[idx],
        )
