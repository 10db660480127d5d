"""Benchmark training on the flights example: rows/s per epoch, validation quality, and the trainer's
overhead against a bare loop.

The task is ``embedkit.datasets.flights()`` (261,877 training / 65,469 validation rows; ``--rows`` keeps
only the first rows, for a quick run), with the library's defaults: layers [200, 100], default embedding
widths ``min(600, round(1.6 * n ** 0.56))``, batch 1024, default regularisation, and the learning rate
suggested by the LR finder (``Learner.fit`` with no ``lr``).

Measured on the CPU, and on CUDA too when a GPU is present (bf16 autocast, the trainer's default there):

- trainer: ``Learner.lr_find`` then ``Learner.fit`` for ``--epochs`` epochs; per epoch the trainer's own
  rows/s (training only, validation excluded), valid AUC and log loss, and the AUC of the weights the
  fit ends with (``restore_best``: the epoch with the best validation log loss);
- bare loop: the same architecture (same seed), the same optimizer configuration
  (``configure_optimizer`` with the suggested rate, the config's weight decay and betas) and the same
  pre-made tensors; batches are ``index_select``-ed from a permutation, then forward, loss, backward,
  step, ``zero_grad``, nothing else (no schedule, no unknown-code swapping, no NaN guard, no callbacks).
  Half its epochs run before the trainer's fit and half after, so slow drift of a shared machine hits
  both alike. ``ratio`` = median trainer epoch rows/s / median bare epoch rows/s.

The trainer tunes glibc's malloc once per process on its first step (see
``embedkit.nn.trainer._retain_freed_memory``); the LR finder runs first, so the bare loop runs under the
same allocator settings and the ratio measures the loop's own overhead.

On a shared machine other processes slow some epochs down. Each epoch records ``others_cpu``: the CPU
time all other processes used during the epoch, as a fraction of the machine's cores (from
``/proc/stat`` and this process's own CPU time; Linux only), the load average, and a probe: the median
time of a fixed 1024x395 @ 395x200 float32 matmul (about 0.85 ms on a quiet 2-core AMD EPYC, 0.5 ms on
a 2-core Intel Xeon with AMX; the JSON records the CPU's model name), which catches some contention on
the host under a virtual machine. An epoch with ``others_cpu`` above a few percent, or a probe well
above the quiet value, was disturbed; the bare loop's epochs are measured the same way. Neither sees everything: on a shared virtual machine whole runs have been ~30% slower with
both indicators quiet (other guests on the host share its caches and memory bandwidth), so compare
absolute rows/s across runs with care; the trainer/bare ratio, whose two sides run minutes apart in one
process, is the steadier figure.

Against fastai (``--versus-fastai``): fastai's ``tabular_learner`` (``bench/fastai_tabular.py``, run with
the Python of fastai's own environment, ``make fastai-env``; fastai is no dependency of embedkit) and the
trainer on the same split, batch size, layers, epochs and thread count. Each run pairs one fastai run
with one trainer run in lock-step: each side's LR finder alone, then fastai's epoch 1, the trainer's
epoch 1, fastai's epoch 2, ... (the other process waits meanwhile), so that the two epochs of a pair run
seconds apart on a host whose speed drifts over minutes. A round is two such runs: fastai at its own
default embedding widths, and fastai at the trainer's widths (the same architecture). Rows/s counts the
training phase of an epoch on both sides; the ratio is the median over all epoch pairs; the quality is
the best validation AUC within the epochs. fastai trains at its LR finder's valley, as its course does.

Usage::

    python bench/train.py                       # full example, 5 epochs, seed 0
    python bench/train.py --rows 20000 --epochs 2 --bare-epochs 2
    python bench/train.py --seed 1 --out bench/results/train_seed1.json
    make fastai-env && python bench/train.py --versus-fastai   # -> bench/results/train_vs_fastai.json

Prints a markdown table and writes ``bench/results/train.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from embedkit.datasets import flights
from embedkit.nn.callbacks import Callback
from embedkit.nn.learner import Learner
from embedkit.nn.model import TabularNet, loss_fn
from embedkit.nn.optim import configure_optimizer
from embedkit.nn.trainer import TrainConfig

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "train.json"
VERSUS_RESULTS = BENCH / "results" / "train_vs_fastai.json"
FASTAI_PYTHON = BENCH.parent / ".venv-fastai" / "bin" / "python"
GOALS = {"valid_auc": 0.75, "trainer_over_bare": 0.85, "trainer_rows_per_s": 100_000.0, "over_fastai": 3.0}


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def probe_us(reps: int = 10) -> float:
    """Median time of a fixed CPU matmul: how disturbed the machine is right now."""
    a, b = torch.ones(1024, 395), torch.ones(395, 200)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


class OthersCpu:
    """CPU used by all other processes between ``start()`` and ``stop()``, as a fraction of all cores."""

    def start(self) -> None:
        self._t0, self._busy0, self._own0 = time.perf_counter(), _machine_busy_s(), _own_cpu_s()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        busy, own = _machine_busy_s(), _own_cpu_s()
        if busy is None or self._busy0 is None or wall <= 0:
            return math.nan
        return max(0.0, (busy - self._busy0) - (own - self._own0)) / (wall * (os.cpu_count() or 1))


def _machine_busy_s() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class EpochProbe(Callback):
    """Per epoch: other processes' CPU share, the load average and the matmul probe (no per-batch hook)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._others = OthersCpu()

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        self._others.start()

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
        others = self._others.stop()  # the epoch's training and validation
        self.rows.append({"others_cpu": others, "probe_us": probe_us(), "loadavg_1m": os.getloadavg()[0]})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epochs(
    learn: Learner, data: Any, lr: float, epochs: range, seed: int, others: list[float]
) -> list[float]:
    """rows/s of a bare loop over ``data`` for each epoch in ``epochs`` (a fresh model per call); appends
    each epoch's share of CPU used by other processes to ``others``."""
    cfg = learn.train_config
    device = learn.trainer.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initial weights as the trainer's model
        model = TabularNet.from_architecture(learn.model.architecture()).to(device)
    opt = configure_optimizer(model, lr, cfg.weight_decay, cfg.decay_embeddings, betas=(cfg.moms[0], 0.99))
    amp = learn.trainer.amp
    x_cat, x_cont, y = data.x_cat.to(device), data.x_cont.to(device), data.y.to(device)
    n, bs = len(y), cfg.batch_size
    model.train()
    out: list[float] = []
    for epoch in epochs:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).to(device)
        sync(device)
        meter = OthersCpu()
        meter.start()
        t0 = time.perf_counter()
        rows = 0
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            if idx.numel() < 2:
                continue  # BatchNorm cannot train on a single row (the trainer skips it too)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(x_cat.index_select(0, idx), x_cont.index_select(0, idx))
            loss = loss_fn(learn.target.task, logits, y.index_select(0, idx), None)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            rows += idx.numel()
        sync(device)
        out.append(rows / (time.perf_counter() - t0))
        others.append(meter.stop())
    del model, opt
    return out


def run(
    device: str, args: argparse.Namespace, ex: Any, callbacks: list[Callback] | None = None
) -> dict[str, Any]:
    train, valid = ex.train, ex.valid
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, device=device)
    probe = EpochProbe()
    learn = Learner.from_frame(train, ex.spec, train_config=tcfg, callbacks=[*(callbacks or []), probe])
    dev = learn.trainer.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    finder = learn.lr_find(train)
    lr_find_s = time.perf_counter() - t0
    # default: what Learner.fit uses with no lr (the finder's ``suggestion``); --lr-suggestion NAME
    # picks one of the finder's alternatives instead and passes it to fit explicitly
    lr = finder.alternatives[args.lr_suggestion] if args.lr_suggestion else finder.suggestion
    data = learn.tensors(train)
    half = args.bare_epochs // 2
    bare_others: list[float] = []
    bare = bare_epochs(learn, data, lr, range(half), args.seed, bare_others)
    t0 = time.perf_counter()
    hist = learn.fit(train, valid, lr=lr if args.lr_suggestion else None)
    fit_s = time.perf_counter() - t0
    bare += bare_epochs(learn, data, lr, range(half, args.bare_epochs), args.seed, bare_others)
    final = learn.evaluate(valid)
    epochs = []
    for e, p in zip(hist.epochs, probe.rows, strict=True):
        epochs.append(
            {
                "epoch": e["epoch"],
                "rows_per_s": e["rows_per_s"],
                "seconds": e["seconds"],
                "train_loss": e["train_loss"],
                "valid_auc": e["valid_auc"],
                "valid_log_loss": e["valid_log_loss"],
                **p,
            }
        )
    trainer_rps = statistics.median(e["rows_per_s"] for e in epochs)
    bare_rps = statistics.median(bare) if bare else math.nan
    res: dict[str, Any] = {
        "device": str(dev),
        "amp": str(learn.trainer.amp) if learn.trainer.amp else None,
        "lr_rule": args.lr_suggestion or "suggestion",
        "lr_suggestion": lr,
        "lr_alternatives": finder.alternatives,
        "lr_find_s": lr_find_s,
        "fit_s": fit_s,
        "epochs": epochs,
        "best_epoch": (hist.best_epoch or 0) + 1,
        "final": final,
        "max_valid_auc": max(e["valid_auc"] for e in epochs),
        "trainer_rows_per_s_median": trainer_rps,
        "trainer_rows_per_s_best": max(e["rows_per_s"] for e in epochs),
        "bare_rows_per_s": bare,
        "bare_others_cpu": bare_others,
        "bare_rows_per_s_median": bare_rps,
        "trainer_over_bare": trainer_rps / bare_rps if bare else math.nan,
        "trainer_over_bare_best": (max(e["rows_per_s"] for e in epochs) / max(bare)) if bare else math.nan,
    }
    if dev.type == "cuda":
        res["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        res["gpu"] = torch.cuda.get_device_name(dev)
    res["emb_widths"] = dict(zip(learn.model.cat_names, learn.model.emb_dims, strict=True))
    return res


# ---- against fastai ------------------------------------------------------------------------------------
def fastai_spec(split: Path, args: argparse.Namespace, emb_szs: dict[str, int] | None) -> Path:
    """The JSON that bench/fastai_tabular.py reads: the split written to ``split`` and the settings."""
    from embedkit.datasets import FLIGHTS_CATEGORICAL, FLIGHTS_CONTINUOUS, FLIGHTS_TARGET

    spec = {
        "train": str(split / "train.parquet"),
        "valid": str(split / "valid.parquet"),
        "categorical": FLIGHTS_CATEGORICAL,
        "continuous": FLIGHTS_CONTINUOUS,
        "target": FLIGHTS_TARGET,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "layers": [200, 100],
        "epochs": args.epochs,
        "emb_szs": emb_szs,
    }
    path = split / "spec.json"
    path.write_text(json.dumps(spec))
    return path


class _Handover(Callback):
    """Hands each epoch boundary of the trainer's fit to the fastai process first: it runs its next epoch
    (validation included) while this one waits, then this one runs its own."""

    def __init__(self, partner: _Partner) -> None:
        self.partner = partner
        self.active = False

    def on_train_begin(self, trainer: Any) -> None:
        self.active = True  # the fit, not the LR finder

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        if self.active:
            self.partner.until_ready()
            self.partner.send("GO")
            self.partner.expect("DONE")


class _Partner:
    """bench/fastai_tabular.py --lockstep, talked to line by line."""

    def __init__(self, python: Path, spec: Path, log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(BENCH / "fastai_tabular.py"), "--spec", str(spec), "--lockstep"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._ready = False  # it said READY and waits for GO

    def until_ready(self) -> None:
        """Wait until the fastai process waits before its next epoch (at once if it already does)."""
        if not self._ready:
            self.expect("READY")
        self._ready = True

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        self._ready = False

    def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == word:
                return
        self.fail(f"fastai's run ended before it said {word}")

    def result(self) -> dict[str, Any]:
        self.expect("FINISHED")  # it waits until this side's last epoch is over, then exits
        out, _ = self.proc.communicate("BYE\n")
        self._log.close()
        if self.proc.returncode != 0:
            self.fail(f"fastai's run failed (exit {self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])

    def fail(self, what: str) -> None:
        self.proc.kill()
        self._log.close()
        raise SystemExit(f"{what}:\n{Path(self._log.name).read_text()[-3000:]}")


def lockstep(
    python: Path, split: Path, args: argparse.Namespace, ex: Any, emb_szs: dict[str, int] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One fastai run and one trainer run, their epochs alternating (fastai's epoch k, then the trainer's).
    Each side's LR finder runs alone first: fastai's, then the trainer's."""
    partner = _Partner(python, fastai_spec(split, args, emb_szs), split / "fastai.log")
    partner.until_ready()  # fastai has prepared its data and found its rate; it waits before epoch 1
    ours = run("cpu", args, ex, callbacks=[_Handover(partner)])
    return partner.result(), ours


def versus_fastai(args: argparse.Namespace, ex: Any) -> dict[str, Any]:
    python = Path(args.fastai_python)
    if not python.exists():
        raise SystemExit(
            f"no fastai environment at {python}: run 'make fastai-env' (a separate virtual environment "
            "with fastai and the CPU build of torch), or pass --fastai-python PATH"
        )
    args.bare_epochs = 0  # the bare loop is the plain bench's business
    sides: dict[str, list[dict[str, Any]]] = {"fastai": [], "fastai_same_widths": [], "embedkit": []}
    pairs: dict[str, list[float]] = {"fastai": [], "fastai_same_widths": []}
    model = Learner.from_frame(ex.train, ex.spec).model  # the trainer's widths, for fastai's second run
    widths = dict(zip(model.cat_names, model.emb_dims, strict=True))
    with tempfile.TemporaryDirectory(prefix="embedkit-vs-fastai-") as tmp:
        split = Path(tmp)
        ex.train.to_parquet(split / "train.parquet")
        ex.valid.to_parquet(split / "valid.parquet")
        for r in range(args.rounds):
            for name, emb_szs in (("fastai", None), ("fastai_same_widths", widths)):
                fa, ours = lockstep(python, split, args, ex, emb_szs)
                ours.pop("emb_widths")
                ours["peak_rss_mb"] = peak_rss_mb()
                sides[name].append(fa)
                sides["embedkit"].append(ours)
                ratios = [
                    e["rows_per_s"] / f["rows_per_s"]
                    for e, f in zip(ours["epochs"], fa["epochs"], strict=True)
                ]
                pairs[name] += ratios
                print(
                    f"round {r + 1}, {name}: {_median_rps(fa):,.0f} rows/s, embedkit "
                    f"{ours['trainer_rows_per_s_median']:,.0f}; per epoch pair "
                    + ", ".join(f"{x:.2f}x" for x in ratios),
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for name, runs in sides.items():
        rates = [e["rows_per_s"] for run_ in runs for e in run_["epochs"]]
        aucs = [max(e["valid_auc"] for e in run_["epochs"]) for run_ in runs]
        summary[name] = {
            "rows_per_s_median": statistics.median(rates),
            # fastai: its process's peak; embedkit: this process's, which holds every run so far
            "peak_rss_mb": max(r.get("peak_rss_mb", math.nan) for r in runs),
            "best_valid_auc_per_run": aucs,
            "emb_widths": runs[0].get("emb_widths") or widths,
        }
    # the figure: the median over epoch pairs (each pair ran seconds apart), not a ratio of medians
    summary["ratio_over_fastai"] = statistics.median(pairs["fastai"])
    summary["ratio_over_fastai_same_widths"] = statistics.median(pairs["fastai_same_widths"])
    summary["ratio_per_epoch_pair"] = pairs
    return {"runs": sides, "summary": summary}


def _median_rps(fastai_run: dict[str, Any]) -> float:
    return statistics.median(e["rows_per_s"] for e in fastai_run["epochs"])


def versus_table(summary: dict[str, Any]) -> str:
    lines = [
        "| side | embedding widths | rows/s (median epoch) | best valid AUC per run | peak RSS (MB) "
        "| embedkit / side (median epoch pair) |",
        "|---|---|---:|---|---:|---:|",
    ]
    for name in ("fastai", "fastai_same_widths", "embedkit"):
        side = summary[name]
        widths = ", ".join(f"{k} {v}" for k, v in side["emb_widths"].items())
        aucs = ", ".join(f"{a:.4f}" for a in side["best_valid_auc_per_run"])
        lines.append(
            f"| {name} | {widths} | {side['rows_per_s_median']:,.0f} | {aucs} | "
            f"{side['peak_rss_mb']:,.0f} | "
            + (f"{summary['ratio_over_' + name]:.2f}x |" if name != "embedkit" else "1.00x |")
        )
    return "\n".join(lines)


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| device | epoch | rows/s | valid AUC | valid log loss | train loss | others' CPU | probe (us) "
        "| load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        for e in r["epochs"]:
            lines.append(
                f"| {r['device']} | {e['epoch']} | {e['rows_per_s']:,.0f} | {e['valid_auc']:.4f} | "
                f"{e['valid_log_loss']:.4f} | {e['train_loss']:.4f} | {e['others_cpu']:.1%} | "
                f"{e['probe_us']:.0f} | {e['loadavg_1m']:.2f} |"
            )
    lines += [
        "",
        "| device | lr (rule) | best epoch | final AUC | trainer rows/s (median / best) | "
        "bare rows/s (median / best) | trainer / bare (median / best) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        bare = r["bare_rows_per_s"]
        lines.append(
            f"| {r['device']} | {r['lr_suggestion']:.2e} ({r['lr_rule']}) | {r['best_epoch']} | "
            f"{r['final']['auc']:.4f} | "
            f"{r['trainer_rows_per_s_median']:,.0f} / {r['trainer_rows_per_s_best']:,.0f} | "
            f"{r['bare_rows_per_s_median']:,.0f} / {max(bare) if bare else math.nan:,.0f} | "
            f"{r['trainer_over_bare']:.3f} / {r['trainer_over_bare_best']:.3f} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict[str, Any]:
    # the CPU model too: 2-core hosts of one size came with different CPUs (the probe ~0.85 ms on one,
    # ~0.5 ms on another), so figures compare only within one model
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }


def main_versus(args: argparse.Namespace, ex: Any) -> int:
    t0 = time.perf_counter()
    res = versus_fastai(args, ex)
    summary = res["summary"]
    best_auc = max(summary["embedkit"]["best_valid_auc_per_run"])
    goals = {
        "over_fastai>=3": summary["ratio_over_fastai"] >= GOALS["over_fastai"],
        "valid_auc>=0.75_within_epochs": min(summary["embedkit"]["best_valid_auc_per_run"])
        >= GOALS["valid_auc"],
    }
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": {"train": len(ex.train_idx), "valid": len(ex.valid_idx)},
        "machine": machine(),
        **res,
        "goals": goals,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - t0,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = args.out or VERSUS_RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(versus_table(summary))
    n_pairs = len(summary["ratio_per_epoch_pair"]["fastai"])
    print(
        f"\nembedkit / fastai: {summary['ratio_over_fastai']:.2f}x (median of {n_pairs} epoch pairs); at "
        f"the same widths {summary['ratio_over_fastai_same_widths']:.2f}x; embedkit's best valid AUC "
        f"{best_auc:.4f}"
    )
    print(f"peak RSS (this process: the trainer) {report['peak_rss_mb']:,.0f} MB")
    print("goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="keep only the first N rows of the example")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument(
        "--bare-epochs", type=int, default=4, help="epochs of the bare loop (half before the fit)"
    )
    ap.add_argument(
        "--lr-suggestion",
        choices=["valley", "minimum/10", "steepest"],
        default=None,
        help="train at this LR-finder alternative instead of its default suggestion",
    )
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA run even when a GPU is present")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU run (on a GPU machine)")
    ap.add_argument(
        "--versus-fastai",
        action="store_true",
        help="train fastai's tabular_learner and the trainer back to back (needs make fastai-env)",
    )
    ap.add_argument("--fastai-python", type=Path, default=FASTAI_PYTHON, help="fastai's environment")
    ap.add_argument("--rounds", type=int, default=2, help="with --versus-fastai: interleaved rounds")
    ap.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} ({VERSUS_RESULTS})")
    args = ap.parse_args(argv)

    ex = flights(n_rows=args.rows)
    if args.versus_fastai:
        return main_versus(args, ex)
    args.out = args.out or RESULTS
    results = {}
    if not args.no_cpu:
        results["cpu"] = run("cpu", args, ex)
        results["cpu"].pop("emb_widths")
    if torch.cuda.is_available() and not args.no_cuda:
        results["cuda"] = run("cuda", args, ex)
        results["cuda"].pop("emb_widths")
    if not results:
        ap.error("nothing to run: --no-cpu was given and no CUDA GPU is available (or --no-cuda)")
    first = next(iter(results.values()))
    goals = {
        "valid_auc>=0.75_within_epochs": first["max_valid_auc"] >= GOALS["valid_auc"],
        "final_auc>=0.75": first["final"]["auc"] >= GOALS["valid_auc"],
        "trainer/bare>=0.85": first["trainer_over_bare"] >= GOALS["trainer_over_bare"],
    }
    if "cpu" in results:
        cpu_rate = results["cpu"]["trainer_rows_per_s_median"]
        goals["trainer_rows_per_s>=100k"] = cpu_rate >= GOALS["trainer_rows_per_s"]
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": {"train": len(ex.train_idx), "valid": len(ex.valid_idx)},
        "machine": machine(),
        "results": results,
        "goals": goals,
        "peak_rss_mb": peak_rss_mb(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(table(results))
    for r in results.values():
        print(f"{r['device']}: lr_find {r['lr_find_s']:.1f} s; fit {r['fit_s']:.1f} s")
    print(f"\npeak RSS {report['peak_rss_mb']:,.0f} MB")
    for r in results.values():
        shares = ", ".join(f"{v:.1%}" for v in r["bare_others_cpu"])
        print(f"{r['device']} bare loop: others' CPU per epoch {shares}")
    print("goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
