"""The tabular net: entity embeddings + continuous inputs → Linear/ReLU/BatchNorm/Dropout blocks → a head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ..bundle import BundleContents

TASKS = ("regression", "binary", "multiclass")

# Embedding tables of at least this many rows update lazily (when ``NetConfig.sparse_embeddings``): only
# the rows a batch touches move, and their Adam moments update only then (see optim.LazyAdamW). A batch
# of ~1k rows touches few rows of such a table, and a rare category keeps what it learned instead of
# drifting with stale momentum. A smaller table has most of its rows in every batch, where lazy and
# dense Adam nearly coincide and the dense update is cheaper.
SPARSE_MIN_ROWS = 1024
# Of the lazy tables, those of at least this many entries (rows x width) are also looked up on their own
# with row-sparse gradients (``nn.Embedding(sparse=True)``), whose cost follows the batch, not the table.
# Smaller ones join the one gather of all tables (TabularNet.embed) with a dense gradient, which costs
# a pass over the table per step: cheaper than a sparse lookup and backward below ~230k entries at one
# thread and ~400k at two (measured on the flights example's tables). Every table of the flights example
# is below it (the largest: 3,819 x 12).
SPARSE_MIN_ENTRIES = 1 << 18


def updates_lazily(n_rows: int, config: NetConfig) -> bool:
    """Whether a table of ``n_rows`` rows is updated row-lazily (see ``SPARSE_MIN_ROWS``)."""
    return bool(config.sparse_embeddings) and n_rows >= SPARSE_MIN_ROWS


def row_sparse_lookup(n_rows: int, dim: int, config: NetConfig) -> bool:
    """Whether a table is looked up with row-sparse gradients (a lazy table of >= ``SPARSE_MIN_ENTRIES``)."""
    return updates_lazily(n_rows, config) and n_rows * dim >= SPARSE_MIN_ENTRIES


#: dropout of a net built without a rate (Learner resolves ``None`` with auto_dropout instead)
DEFAULT_DROPOUT = 0.1


def auto_dropout(n_rows: int) -> float:
    """Default dropout for ``n_rows`` training rows: 0.2 up to 10,000 rows, 0.1 from 100,000, and
    log-linear in between (small tables need more regularisation; see ``NetConfig.dropout``)."""
    lo, hi = 10_000, 100_000
    if n_rows <= lo:
        return 0.2
    if n_rows >= hi:
        return 0.1
    frac = math.log(n_rows / lo) / math.log(hi / lo)
    return round(0.2 - 0.1 * frac, 3)


#: the default cap of the width rule (NetConfig.max_emb_dim)
MAX_EMB_DIM = 12


def default_emb_dim(n_codes: int, max_dim: int = MAX_EMB_DIM) -> int:
    """Embedding width for a vocabulary of ``n_codes`` rows: ``min(max_dim, round(1.6 * n ** 0.56))``
    (fast.ai's rule; ``NetConfig.max_emb_dim`` sets the cap)."""
    return int(max(1, min(max_dim, round(1.6 * n_codes**0.56))))


@dataclass
class NetConfig:
    """Architecture of a :class:`TabularNet`. Defaults follow the fast.ai tabular course."""

    task: str = "binary"
    n_classes: int = 2  # output classes (multiclass only)
    n_targets: int = 1  # regression outputs
    layers: list[int] = field(default_factory=lambda: [200, 100])  # hidden widths
    # one rate for every hidden layer, or one per layer. None: chosen from the number of training rows
    # by Learner (auto_dropout: 0.2 up to 10,000 rows, 0.1 from 100,000, log-linear between); a net
    # built directly gets 0.1. bench/suite.py: 0.2 helped the small tables, and cost the 150k-row
    # flights slice 0.01 AUC against 0.1
    dropout: list[float] | float | None = None
    # dropout on the concatenated embeddings; None: the same rule as ``dropout``
    emb_dropout: float | None = None
    emb_dims: dict[str, int] = field(default_factory=dict)  # per-column width overrides
    # cap of the default width rule (default_emb_dim). 12, not fast.ai's 600: narrow tables memorise
    # less of the training rows and cost trees and k-NN downstream less (bench/suite.py: the net on
    # the flights slice scored AUC 0.758 at 12 and 0.72 at the uncapped rule's 100+ dims)
    max_emb_dim: int = MAX_EMB_DIM
    # std of the embeddings' truncated-normal init (cut at 2 std). fast.ai's 0.01 starts every category
    # near the origin, so a rare category's vector stays close to every other rare one's; 1.0 keeps a
    # distinct random component per category, which trees fed the tables can split on (see
    # bench/paper_table.py). Training moves a vector only as far as its rows' gradients take it, and
    # embeddings get no weight decay unless TrainConfig.decay_embeddings, so a rare category keeps most
    # of its random start. Default 1.0: on the flights slice of bench/suite.py the net scored AUC 0.755
    # against 0.725 at 0.01, and the small tables gained too
    emb_init_std: float = 1.0
    # None: torch's generator (seeded by TrainConfig.seed) draws the initial vectors. An int: each
    # category's initial vector is a function of (this seed, column, value) alone, so nets trained on
    # different rows (cross-fitting's fold nets) start every category they share at the same point
    emb_init_seed: int | None = None
    use_bn: bool = True  # BatchNorm after each hidden ReLU
    bn_cont: bool = True  # BatchNorm on the continuous inputs
    y_range: tuple[float, float] | None = None  # regression: squash outputs into (lo, hi) by a sigmoid
    # regression: the training target's mean and standard deviation, one per output (Learner sets them
    # from the training rows). The head predicts the standardised target, the forward pass returns
    # ``head * y_std + y_mean`` (original units), and the loss is the standardised one, so the learning
    # rate, the init and weight decay mean the same whatever the target's units. With ``y_range`` the
    # outputs are squashed into that range instead (no affine), the loss still divided by ``y_std``.
    # None: no scaling
    y_mean: list[float] | None = None
    y_std: list[float] | None = None
    standardize_target: bool = True  # regression: whether Learner sets y_mean / y_std from the data
    # tables of >= SPARSE_MIN_ROWS rows update lazily (touched rows only); the largest of them are
    # looked up with row-sparse gradients (SPARSE_MIN_ENTRIES)
    sparse_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.emb_init_seed is not None:
            if isinstance(self.emb_init_seed, bool) or int(self.emb_init_seed) != self.emb_init_seed:
                raise ValueError(f"emb_init_seed must be an integer or None, got {self.emb_init_seed!r}")
            self.emb_init_seed = int(self.emb_init_seed)
        if (
            isinstance(self.max_emb_dim, bool)
            or int(self.max_emb_dim) != self.max_emb_dim
            or self.max_emb_dim < 1
        ):
            raise ValueError(f"max_emb_dim must be an integer >= 1, got {self.max_emb_dim!r}")
        self.max_emb_dim = int(self.max_emb_dim)
        if not (math.isfinite(self.emb_init_std) and self.emb_init_std > 0):
            raise ValueError(f"emb_init_std must be a finite number > 0, got {self.emb_init_std!r}")
        if self.y_range is not None:
            self.y_range = (float(self.y_range[0]), float(self.y_range[1]))
            if not self.y_range[0] < self.y_range[1]:
                raise ValueError(f"y_range must be (low, high) with low < high, got {self.y_range}")
        if (self.y_mean is None) != (self.y_std is None):
            raise ValueError("y_mean and y_std go together: set both or neither")
        if self.y_mean is not None and self.y_std is not None:
            self.y_mean = [float(v) for v in np.atleast_1d(self.y_mean)]
            self.y_std = [float(v) for v in np.atleast_1d(self.y_std)]
            if len(self.y_mean) != len(self.y_std):
                raise ValueError(f"y_mean has {len(self.y_mean)} values and y_std {len(self.y_std)}")
            if not all(math.isfinite(m) for m in self.y_mean) or not all(
                math.isfinite(s) and s > 0 for s in self.y_std
            ):
                raise ValueError(
                    f"y_mean must be finite and y_std finite and > 0, got {self.y_mean}, {self.y_std}"
                )

    @property
    def out_dim(self) -> int:
        if self.task == "binary":
            return 1
        if self.task == "multiclass":
            return self.n_classes
        return self.n_targets

    def dropouts(self) -> list[float]:
        if self.dropout is None:
            return [DEFAULT_DROPOUT] * len(self.layers)
        if isinstance(self.dropout, (int, float)):
            return [float(self.dropout)] * len(self.layers)
        if len(self.dropout) != len(self.layers):
            raise ValueError(f"dropout has {len(self.dropout)} values for {len(self.layers)} layers")
        return [float(p) for p in self.dropout]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["y_range"] = list(self.y_range) if self.y_range else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        d = dict(d)
        # written before the width cap existed: the rule was uncapped up to 600, and its tables are
        # that wide (a new default would rebuild narrower tables that the weights do not fit)
        d.setdefault("max_emb_dim", 600)
        if d.get("y_range"):
            d["y_range"] = tuple(d["y_range"])
        return cls(**d)


_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_HASH_KEY = "embedkit-init-v1"  # 16 bytes: pandas' hash_array key (fixed, so vectors never change)
_BLOCK = 1 << 20  # entries drawn per block (bounds the uint64/float64 temporaries to ~8 MB each)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective mix of uint64s (neighbouring inputs give unrelated outputs)."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def value_keyed_init(values: Sequence[Any], column: str, dim: int, seed: int, std: float) -> np.ndarray:
    """Initial rows of an embedding table, keyed by value (what ``NetConfig.emb_init_seed`` uses).

    Returns float32 of shape ``(2 + len(values), dim)``: the missing row, the unknown row, then one row
    per value, in order. Each row depends only on ``(seed, column, value)`` (the value through
    ``str``), so two vocabularies that share a value give it the same vector, wherever it sits. Entries
    follow a normal distribution with standard deviation ``std`` truncated at 2 std, like
    ``TabularNet``'s default init: a SplitMix64 hash of the key and the entry's index gives a uniform,
    which the inverse normal CDF maps into ``[-2 std, 2 std]``. Column ``j`` does not depend on ``dim``,
    so a narrower table gets the leading columns of a wider one.
    """
    from pandas.util import hash_array
    from scipy.special import ndtr, ndtri

    if not (np.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")

    def key(v: Any) -> str:  # lone surrogates cannot be UTF-8 encoded by the hash: escape them
        return f"{seed}\x1f{column}\x1fv:{v}".encode("utf-8", "backslashreplace").decode("utf-8")

    keys = [f"{seed}\x1f{column}\x1f\x00missing", f"{seed}\x1f{column}\x1f\x00unknown", *map(key, values)]
    h = hash_array(np.asarray(keys, dtype=object), hash_key=_HASH_KEY, categorize=False)
    out = np.empty((len(keys), dim), dtype=np.float32)
    steps = _SPLITMIX_GAMMA * np.arange(1, dim + 1, dtype=np.uint64)
    lo, hi = ndtr(-2.0), ndtr(2.0)
    rows = max(1, _BLOCK // max(dim, 1))
    for start in range(0, len(keys), rows):
        with np.errstate(over="ignore"):
            x = h[start : start + rows, None] + steps[None, :]
        u = (_splitmix64(x) >> np.uint64(11)).astype(np.float64) * 2.0**-53  # uniform in [0, 1)
        z = ndtri(lo + (u + 2.0**-54) * (hi - lo))
        out[start : start + rows] = np.clip(z, -2.0, 2.0) * std
    return out


class Dropout(nn.Dropout):
    """``nn.Dropout`` (zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``) with a
    cheaper mask on the CPU.

    On the CPU ``bernoulli_`` draws one Mersenne-Twister number per element (~5 ns each: a quarter of a
    training step of the flights example). Here each 64-bit draw gives eight 8-bit uniforms when a
    multiple of 1/256 comes within 2% of ``p`` (0.1 drops 26/256 = 10.2%, 0.2 drops 51/256 = 19.9%, as do
    the defaults of ``auto_dropout``), else four 16-bit uniforms, ``p`` rounded to 1/65536 (the course's
    0.001 and 0.01). The kept elements are scaled by ``1 / (1 - the rate used)``, so each output's
    expectation is its input. The 8-bit mask costs about 40% less than the 16-bit one (a training step
    of the flights example ~9% less). Draws from torch's default generator, so ``torch.manual_seed``
    makes it reproducible. Other devices use ``F.dropout`` (fast there).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.p >= 1.0:
            return super().forward(x)
        levels, dtype, offset, per_draw = 256, torch.uint8, 0, 8
        dropped = round(self.p * levels)
        if dropped == 0 or abs(dropped / levels - self.p) > 0.02 * self.p:
            # int16 views hold uniforms over [-32768, 32767]: shift the threshold by the offset
            levels, dtype, offset, per_draw = 65536, torch.int16, -32768, 4
            dropped = round(self.p * levels)
            if dropped == 0:
                return x
        n = x.numel()
        # all 64 bits random: a plain random_() leaves the sign bit 0, which would skew one uniform a draw
        bits = torch.empty((n + per_draw - 1) // per_draw, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        uniform = bits.view(dtype)[:n].view(x.shape)
        keep = uniform.ge_(dropped + offset)  # an element survives when its uniform is not below `dropped`
        return x * keep.to(x.dtype).mul_(levels / (levels - dropped))


class _FlatGather(torch.autograd.Function):
    """``flat[index]`` for a 1-D ``flat``; the backward adds the gradient into the entries it came from.

    What ``flat.index_select(0, index)`` computes, with ``scatter_add_`` in the backward instead of
    ``index_add_`` (on the CPU ``index_add_`` of a 1-D tensor took ~1.5x as long for 82k entries).
    Both add the contributions to one entry in the order of ``index``.
    """

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.numel = flat.numel()
        return flat.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.numel).scatter_add_(0, index, grad.contiguous()), None


class _GatherPlan:
    """Where each dense table's entries sit once their weights are laid end to end in one flat vector.

    Entry ``j`` of code ``c`` in table ``t`` (width ``d_t``) is ``flat[offset_t + c * d_t + j]``. For
    codes ``[n, n_cat]`` the plan computes ``start = codes * width + offset`` per column (``[n, n_cat]``,
    cheap), spreads it over the output columns with one ``gather`` along dim 1 and adds ``j``: an index
    ``[n, sum of the dense widths]`` into ``flat``, whose gather is the lookup of every dense table at once.
    """

    def __init__(self, key: tuple[Any, ...], tables: list[tuple[int, int, bool]]) -> None:
        self.key = key
        device = key[0]
        self.fused = [t for t, (_, _, sparse) in enumerate(tables) if not sparse]
        width = [0] * len(tables)
        offset = [0] * len(tables)
        cols: list[int] = []
        within: list[int] = []
        start = 0
        for t in self.fused:
            rows, dim, _ = tables[t]
            width[t], offset[t] = dim, start
            cols += [t] * dim
            within += range(dim)
            start += rows * dim

        def as_tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        self.width, self.offset = as_tensor(width), as_tensor(offset)
        self.cols, self.within = as_tensor(cols), as_tensor(within)
        # the output in column order: slices of the fused lookup, and the sparse tables by index
        self.parts: list[slice | int] = []
        pos = 0
        for t, (_, dim, sparse) in enumerate(tables):
            if sparse:
                self.parts.append(t)
            elif self.parts and isinstance(self.parts[-1], slice):
                self.parts[-1] = slice(self.parts[-1].start, pos + dim)
                pos += dim
            else:
                self.parts.append(slice(pos, pos + dim))
                pos += dim

    def gather(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        n = codes.shape[0]
        start = codes * self.width + self.offset
        index = torch.gather(start, 1, self.cols.expand(n, -1)).add_(self.within)
        return _FlatGather.apply(flat, index.view(-1)).view(index.shape)  # also for 0 rows


class TabularNet(nn.Module):
    """Entity embeddings for categorical inputs plus continuous inputs, through an MLP.

    ``forward(x_cat, x_cont)`` takes int64 codes ``[n, n_cat]`` and float32 ``[n, n_cont]`` and returns
    raw outputs (logits for classification; values for regression).
    """

    def __init__(
        self, cat_names: list[str], cardinalities: list[int], n_cont: int, config: NetConfig
    ) -> None:
        super().__init__()
        if len(cat_names) != len(cardinalities):
            raise ValueError("cat_names and cardinalities differ in length")
        self.config = config
        self.cat_names = list(cat_names)
        self.cardinalities = list(cardinalities)
        self.n_cont = n_cont
        self.emb_dims = [
            config.emb_dims.get(c, default_emb_dim(n, config.max_emb_dim))
            for c, n in zip(cat_names, cardinalities, strict=True)
        ]
        self.embeds = nn.ModuleList(
            nn.Embedding(n, d, sparse=row_sparse_lookup(n, d, config))
            for n, d in zip(cardinalities, self.emb_dims, strict=True)
        )
        # truncated normal (fast.ai's init at the default std 0.01: every category near the origin)
        std = config.emb_init_std
        for e in self.embeds:
            with torch.no_grad():
                nn.init.trunc_normal_(e.weight, std=std, a=-2 * std, b=2 * std)  # type: ignore
        self.emb_drop = Dropout(DEFAULT_DROPOUT if config.emb_dropout is None else config.emb_dropout)
        self.bn_cont = nn.BatchNorm1d(n_cont) if (config.bn_cont and n_cont) else None
        n_in = sum(self.emb_dims) + n_cont
        blocks: list[nn.Module] = []
        for width, p in zip(config.layers, config.dropouts(), strict=True):
            blocks += [nn.Linear(n_in, width), nn.ReLU(inplace=True)]
            if config.use_bn:
                blocks.append(nn.BatchNorm1d(width))
            if p > 0:
                blocks.append(Dropout(p))
            n_in = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(n_in, config.out_dim)
        # the regression target's scale (NetConfig.y_mean / y_std): rebuilt from the config, so not
        # part of the state dict (weights files and checkpoints stay as they were)
        scaled = config.task == "regression" and config.y_std is not None
        self.register_buffer(
            "y_mean", torch.tensor(config.y_mean, dtype=torch.float32) if scaled else None, persistent=False
        )
        self.register_buffer(
            "y_std", torch.tensor(config.y_std, dtype=torch.float32) if scaled else None, persistent=False
        )

    def set_target_scale(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Regression: predict ``head * std + mean`` from now on (and record both in the config);
        ``None, None`` removes the scale (the head's outputs are then the predictions)."""
        if self.config.task != "regression":
            raise ValueError("a target scale is for regression nets")
        if mean is None or std is None:
            self.config.y_mean = self.config.y_std = None
            self.y_mean = self.y_std = None
            return
        cfg = NetConfig.from_dict({**self.config.to_dict(), "y_mean": list(mean), "y_std": list(std)})
        self.config.y_mean, self.config.y_std = cfg.y_mean, cfg.y_std
        device = self.head.weight.device
        self.y_mean = torch.tensor(cfg.y_mean, dtype=torch.float32, device=device)
        self.y_std = torch.tensor(cfg.y_std, dtype=torch.float32, device=device)

    def lazy_embeddings(self) -> list[nn.Embedding]:
        """The tables whose rows update lazily (:func:`updates_lazily`; the optimizer's LazyAdamW group)."""
        tables = [self._table(i) for i in range(len(self.embeds))]
        return [e for e in tables if updates_lazily(e.num_embeddings, self.config)]

    def _table(self, i: int) -> nn.Embedding:
        table = self.embeds[i]
        assert isinstance(table, nn.Embedding)
        return table

    def embed(self, x_cat: torch.Tensor) -> torch.Tensor:
        """The embedding vectors of codes ``[n, n_cat]``, side by side: ``[n, sum(emb_dims)]``.

        The tables (all but the largest, looked up row-sparsely: see ``SPARSE_MIN_ENTRIES``) are
        looked up together, in one gather from their weights laid end to end (see :class:`_GatherPlan`);
        a row-sparse table is looked up on its own, so that its gradient stays row-sparse. The result is
        what ``torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], 1)`` gives, gradients
        included, at a fraction of the cost: nine tables' lookups and backward passes took ~1 ms of a
        training step of the flights example, one gather and one ``scatter_add_`` ~0.3 ms.
        """
        plan = self._gather_plan(x_cat.device)
        if not plan.fused:
            return torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], dim=1)
        flat = torch.cat([self._table(i).weight.reshape(-1) for i in plan.fused])
        fused = plan.gather(flat, x_cat)
        if len(plan.fused) == len(self.embeds):
            return fused
        parts = [
            fused[:, part] if isinstance(part, slice) else self.embeds[part](x_cat[:, part])
            for part in plan.parts
        ]
        return torch.cat(parts, dim=1)

    def _gather_plan(self, device: torch.device) -> _GatherPlan:
        # rebuilt when the device or a table's sparse flag changes (the trainer turns the flags off
        # under DDP)
        key = (device, tuple(bool(e.sparse) for e in self.embeds))
        plan = self.__dict__.get("_plan")
        if plan is None or plan.key != key:
            tables = [self._table(i) for i in range(len(self.embeds))]
            plan = _GatherPlan(key, [(e.num_embeddings, e.embedding_dim, e.sparse) for e in tables])
            self.__dict__["_plan"] = plan
        return plan

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.embeds:
            parts.append(self.emb_drop(self.embed(x_cat)))
        if self.n_cont:
            parts.append(self.bn_cont(x_cont) if self.bn_cont is not None else x_cont)
        x = self.head(self.body(torch.cat(parts, dim=1)))
        if self.config.y_range is not None:
            lo, hi = self.config.y_range
            x = torch.sigmoid(x) * (hi - lo) + lo
        elif self.y_std is not None:
            x = x * self.y_std + self.y_mean
        return x

    def embedding_weights(self) -> dict[str, torch.Tensor]:
        """The learned embedding matrix of each categorical column (row i = code i), detached on the CPU."""
        return {c: e.weight.detach().float().cpu() for c, e in zip(self.cat_names, self.embeds, strict=True)}  # type: ignore

    def architecture(self) -> dict[str, Any]:
        # every width written out, so the net rebuilds the same whatever the width rule's default
        config = self.config.to_dict()
        config["emb_dims"] = dict(zip(self.cat_names, self.emb_dims, strict=True))
        return {
            "cat_names": self.cat_names,
            "cardinalities": self.cardinalities,
            "n_cont": self.n_cont,
            "config": config,
        }

    @classmethod
    def from_architecture(cls, arch: dict[str, Any]) -> TabularNet:
        return cls(
            arch["cat_names"], arch["cardinalities"], int(arch["n_cont"]), NetConfig.from_dict(arch["config"])
        )


def loss_fn(
    task: str,
    out: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    y_std: torch.Tensor | None = None,
) -> torch.Tensor:
    """The task's training loss, weighted by ``w`` when given (weights normalised to mean 1 per batch).

    Regression: the mean squared error in units of ``y_std`` (the target's standard deviation, when
    the net standardises it), i.e. the MSE of the standardised target.
    """
    out = out.float()
    if task == "binary":
        per = nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y, reduction="none")
    elif task == "multiclass":
        per = nn.functional.cross_entropy(out, y, reduction="none")
    else:
        err = out - y.view(out.shape)
        if y_std is not None:
            err = err / y_std
        per = (err**2).mean(dim=1)
    if w is None:
        return per.mean()
    return (per * w).sum() / w.sum().clamp_min(1e-12)


def to_prediction(task: str, out: torch.Tensor) -> torch.Tensor:
    """Map raw outputs to predictions: probability of class 1, class probabilities, or values."""
    out = out.float()
    if task == "binary":
        return torch.sigmoid(out.squeeze(1))
    if task == "multiclass":
        return torch.softmax(out, dim=1)
    return out.squeeze(1) if out.shape[1] == 1 else out


def load_net(contents: BundleContents, device: str = "cpu") -> TabularNet:
    """Rebuild the net from the manifest and load its safetensors weights (maps GPU-saved weights to ``device``)."""
    from safetensors.torch import load_file

    from ..exceptions import FormatError

    model = TabularNet.from_architecture(contents.architecture)
    try:
        state = load_file(str(contents.weights_path), device=str(device))
    except Exception as exc:
        raise FormatError(f"{contents.weights_path} is damaged: {exc}") from exc
    model.load_state_dict(state)
    model.to(device)
    model.eval()
    return model
