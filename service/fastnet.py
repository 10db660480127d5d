"""A numpy copy of a trained :class:`embedkit.nn.model.TabularNet`'s inference, for small batches.

torch dispatch costs ~200 µs per forward pass of the default net whatever the batch size; the same
arithmetic in numpy costs ~20 µs for one row. :func:`compile_net` copies the weights of an eval-mode net
(embedding gather → continuous BatchNorm → Linear/ReLU/BatchNorm/Dropout blocks → head → y_range) and
returns ``None`` for any module it does not know, so the caller keeps torch. The copy is checked against
torch on random inputs before use.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Largest |numpy - torch| accepted on the random check batch (float32 arithmetic in another order).
TOLERANCE = 1e-4


class _Affine:
    """Eval-mode BatchNorm1d: ``x * scale + shift``."""

    def __init__(self, bn: Any) -> None:
        var = bn.running_var.detach().double().numpy()
        mean = bn.running_mean.detach().double().numpy()
        weight = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones_like(var)
        bias = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros_like(var)
        scale = weight / np.sqrt(var + bn.eps)
        self.scale = scale.astype(np.float32)
        self.shift = (bias - mean * scale).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x *= self.scale
        x += self.shift
        return x


class _Linear:
    def __init__(self, lin: Any) -> None:
        self.wt = np.ascontiguousarray(lin.weight.detach().float().numpy().T)
        self.b = lin.bias.detach().float().numpy().copy() if lin.bias is not None else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.wt
        if self.b is not None:
            y += self.b
        return y


def _relu(x: np.ndarray) -> np.ndarray:
    np.maximum(x, 0, out=x)
    return x


def _identity(x: np.ndarray) -> np.ndarray:
    return x


class NumpyNet:
    """``predict(codes int64 [n, n_cat], cont float32 [n, n_cont])`` → what ``to_prediction`` gives."""

    def __init__(self, model: Any, task: str) -> None:
        from torch import nn

        self.task = task
        self.tables = [e.weight.detach().float().numpy().copy() for e in model.embeds]
        self.n_cont = int(model.n_cont)
        self.bn_cont = _Affine(model.bn_cont) if model.bn_cont is not None else None
        steps: list[Any] = []
        for m in model.body:
            if isinstance(m, nn.Linear):
                steps.append(_Linear(m))
            elif isinstance(m, nn.ReLU):
                steps.append(_relu)
            elif isinstance(m, nn.BatchNorm1d):
                steps.append(_Affine(m))
            elif isinstance(m, nn.Dropout):
                steps.append(_identity)
            else:
                raise TypeError(f"no numpy copy of {type(m).__name__}")
        self.steps = steps
        self.head = _Linear(model.head)
        y_range = model.config.y_range
        self.y_range = (float(y_range[0]), float(y_range[1])) if y_range is not None else None
        std, mean = getattr(model, "y_std", None), getattr(model, "y_mean", None)
        self.y_scale = (
            (std.detach().float().numpy().copy(), mean.detach().float().numpy().copy())
            if std is not None and mean is not None and self.y_range is None
            else None
        )

    def forward(self, codes: np.ndarray, cont: np.ndarray) -> np.ndarray:
        if len(codes) == 1:
            # One row: integer indexing gives views, ~10x cheaper than fancy indexing.
            parts = [t[c] for t, c in zip(self.tables, codes[0].tolist(), strict=True)]
            if self.n_cont:
                parts.append(self._cont(cont)[0])
            x = np.concatenate(parts)[None, :]
        else:
            parts = [t[codes[:, i]] for i, t in enumerate(self.tables)]
            if self.n_cont:
                parts.append(self._cont(cont))
            x = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        for step in self.steps:
            x = step(x)
        x = self.head(x)
        if self.y_range is not None:
            lo, hi = self.y_range
            x = _sigmoid(x) * (hi - lo) + lo
        elif self.y_scale is not None:
            x *= self.y_scale[0]
            x += self.y_scale[1]
        return x

    def _cont(self, cont: np.ndarray) -> np.ndarray:
        c = np.array(cont, dtype=np.float32)  # a copy: the affine works in place
        return self.bn_cont(c) if self.bn_cont is not None else c

    def predict(self, codes: np.ndarray, cont: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite outputs are the caller's to refuse
            out = self.forward(codes, cont)
            if self.task == "binary":
                return _sigmoid(out[:, 0])
            if self.task == "multiclass":
                z = out - out.max(axis=1, keepdims=True)
                np.exp(z, out=z)
                z /= z.sum(axis=1, keepdims=True)
                return z
            return out[:, 0] if out.shape[1] == 1 else out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def compile_net(model: Any, task: str, seed: int = 0, n_check: int = 64) -> NumpyNet | None:
    """A checked numpy copy of ``model`` (an eval-mode TabularNet), or ``None`` when one cannot be made."""
    import torch

    from embedkit.nn.model import to_prediction

    needed = ("embeds", "n_cont", "bn_cont", "body", "head", "config", "cardinalities")
    if any(not hasattr(model, a) for a in needed) or model.training:
        return None
    try:
        net = NumpyNet(model, task)
    except (TypeError, AttributeError) as exc:
        log.info("numpy inference unavailable (%s); using torch", exc)
        return None
    rng = np.random.default_rng(seed)
    codes = (
        np.stack([rng.integers(0, n, n_check) for n in model.cardinalities], axis=1).astype(np.int64)
        if model.cardinalities
        else np.empty((n_check, 0), dtype=np.int64)
    )
    cont = rng.normal(size=(n_check, net.n_cont)).astype(np.float32)
    with torch.inference_mode():
        want = to_prediction(task, model(torch.from_numpy(codes), torch.from_numpy(cont))).numpy()
    got = net.predict(codes, cont)
    # rtol: a regression net's outputs are in the target's units, whose float32 rounding grows with them
    if got.shape != want.shape or not np.allclose(got, want, atol=TOLERANCE, rtol=1e-5):
        log.warning(
            "numpy inference differs from torch (max %.3g); using torch",
            float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan"),
        )
        return None
    return net
