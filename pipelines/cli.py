"""The ``embedkit`` command: ``train``, ``downstream``, ``register``, ``run``, ``demo``, ``serve``, ``score``.

Results go to stdout (``--json`` for one JSON object), logs and progress to stderr. Exit codes: 0 done,
2 a config or data problem (the message says which key to fix; nothing is registered), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM): the run is then marked KILLED and ``embedkit train --resume RUN_ID``
continues it. 1 is any other failure.

``embedkit train --nproc N`` starts N training processes on this machine through torchrun
(DistributedDataParallel, see ``pipelines/train.py``) and returns torchrun's exit code (1 when a process
failed; the failing process's message is on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from embedkit.exceptions import EmbedkitError

from .config import ConfigError, PipelineConfig, load_config
from .signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_raises

log = logging.getLogger("pipelines")

EXAMPLE_CONFIG = Path(__file__).with_name("configs") / "example.toml"
#: Commands provided by other packages, imported only when called: name -> (module, function, what).
EXTERNAL = {
    "serve": ("service.cli", "main", "the prediction service (FastAPI)"),
    "score": ("pipelines.score", "main", "batch scoring"),
}


# ---- arguments -------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embedkit", description="Entity-embedding pipelines on MLflow.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(sp: argparse.ArgumentParser, config_required: bool = True) -> None:
        sp.add_argument(
            "--config", "-c", required=config_required, metavar="FILE", help="pipeline TOML config"
        )
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            dest="overrides",
            help="override a config key, e.g. --set train.epochs=2 (repeatable)",
        )
        sp.add_argument("--json", action="store_true", help="print the result as one JSON object")
        # -v/-q after the command too (SUPPRESS: when absent here, the value before the command stands)
        sp.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        sp.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only"
        )

    sp = sub.add_parser("train", help="train the net: bundle, embedding tables, plots")
    common(sp, config_required=False)  # --config, or --resume (checked in main: one of the two)
    sp.add_argument(
        "--resume", metavar="RUN_ID", help="continue an interrupted train run from its checkpoint"
    )
    sp.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with N processes on this machine (DistributedDataParallel through torchrun: gloo on "
        "CPUs, NCCL with one GPU per process); default 1",
    )
    sp.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for training (the same as --set train.threads=N); default: one below batch "
        "256, else the CPUs this process may use",
    )

    sp = sub.add_parser("downstream", help="fit LightGBM / RandomForest / k-NN on the embeddings + baselines")
    common(sp)
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--train-run", metavar="RUN_ID", help="train run whose tables to use")
    src.add_argument("--tables", metavar="DIR", help="an embedding tables directory")

    sp = sub.add_parser("register", help="register the best candidate as an MLflow model with an alias")
    common(sp)
    sp.add_argument("--train-run", metavar="RUN_ID", required=True)
    sp.add_argument("--downstream-run", metavar="RUN_ID")

    sp = sub.add_parser("run", help="train, downstream and register, linked under one parent run")
    common(sp)

    sp = sub.add_parser("demo", help="`run` on the example config, then how to look and serve")
    common(sp, config_required=False)

    for name, (_, _, what) in EXTERNAL.items():
        sp = sub.add_parser(name, help=what, add_help=False)
        sp.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    if not any(getattr(h, "_embedkit", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._embedkit = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # MLflow sets up its own loggers when imported: import it first, then quieten it (and its artifact
    # download bars) so that stderr shows the pipeline's progress
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401

    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


# ---- commands --------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, default: Path | None = None) -> PipelineConfig:
    if getattr(args, "threads", None) is not None:
        args.overrides = [*args.overrides, f"train.threads={args.threads}"]
    path = args.config or default
    return load_config(path, args.overrides)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from .train import train

    if args.resume:
        if args.config or args.overrides:
            log.warning("--resume uses the config stored in run %s; --config/--set are ignored", args.resume)
        result = train(PipelineConfig.from_dict({}), resume=args.resume)
    else:
        result = train(_config(args))
    return {
        "train_run_id": result.run_id,
        "epochs": result.epochs,
        "metrics": result.metrics,
        "run_dir": str(result.run_dir),
    }


def _launch_train(args: argparse.Namespace) -> int:
    """``embedkit train --nproc N``: run ``python -m pipelines.train`` in N processes through torchrun
    (``torch.distributed.run``) on this machine; returns its exit code."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        raise ConfigError(
            "--nproc: this process already runs under torchrun; leave --nproc out (torchrun's "
            "--nproc-per-node sets the number of processes)"
        )
    forward: list[str] = []
    if args.resume:
        forward += ["--resume", args.resume]
    else:
        _config(args)  # a config error is reported here (exit 2), before any process starts
        if args.config:
            forward += ["--config", str(Path(args.config).resolve())]
        for override in args.overrides:
            forward += ["--set", override]
    if args.json:
        forward.append("--json")
    if getattr(args, "verbose", False):
        forward.append("-v")
    if getattr(args, "quiet", False):
        forward.append("-q")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one machine: a local rendezvous on a free port
        f"--nproc-per-node={args.nproc}",
        "-m",
        "pipelines.train",
        *forward,
    ]
    log.info("starting %d training processes: %s", args.nproc, " ".join(cmd))
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torchrun stops its processes (rank 0 marks the run KILLED)
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        raise


def _cmd_downstream(args: argparse.Namespace) -> dict[str, Any]:
    from .downstream import downstream

    result = downstream(_config(args), train_run_id=args.train_run, tables_path=args.tables)
    return {"downstream_run_id": result.run_id, "models": result.rows}


def _cmd_register(args: argparse.Namespace) -> dict[str, Any]:
    from .register import register

    r = register(_config(args), train_run_id=args.train_run, downstream_run_id=args.downstream_run)
    return _register_out(r)


def _register_out(r: Any) -> dict[str, Any]:
    return {
        "register_run_id": r.run_id,
        "model_uri": r.model_uri,
        "registered_model": r.name,
        "version": r.version,
        "chosen": r.chosen.name,
        "chosen_run_id": r.chosen.run_id,
        "score": r.chosen.score,
    }


def _cmd_run(args: argparse.Namespace, default: Path | None = None) -> dict[str, Any]:
    from .run import run

    r = run(_config(args, default))
    return {
        "run_id": r.run_id,
        "train_run_id": r.train.run_id,
        "downstream_run_id": r.downstream.run_id,
        **_register_out(r.register),
        "train_metrics": r.train.metrics,
    }


def _cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from . import tracking

    out = _cmd_run(args, default=EXAMPLE_CONFIG)
    uri = tracking.configure()
    out["mlflow_ui"] = tracking.ui_command(uri)
    out["serve"] = f"embedkit serve --model-uri {out['model_uri']}"
    out["mlflow_serve"] = (
        f"MLFLOW_TRACKING_URI={uri} mlflow models serve -m {out['model_uri']} --env-manager local -p 5001"
    )
    return out


def _external(name: str, argv: list[str]) -> int:
    module, func, what = EXTERNAL[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            print(
                f"error: `embedkit {name}` ({what}) is not available: {module} is not installed in this "
                "environment",
                file=sys.stderr,
            )
            return 2
        raise
    fn = getattr(mod, func, None)
    if fn is None:
        print(f"error: `embedkit {name}`: {module} has no {func}(argv) entry point", file=sys.stderr)
        return 2
    return int(fn(argv) or 0)


_COMMANDS = {
    "train": _cmd_train,
    "downstream": _cmd_downstream,
    "register": _cmd_register,
    "run": _cmd_run,
    "demo": _cmd_demo,
}


# ---- output ----------------------------------------------------------------------------------------
def _print_result(command: str, out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return
    for key, value in out.items():
        if key == "models":
            print("models:")
            for row in value:
                scores = ", ".join(
                    f"{k} {v:.4f}" for k, v in row.items() if k.startswith("valid_") and isinstance(v, float)
                )
                print(f"  {row['model']:<28} {row['run_id']}  {scores}")
        elif isinstance(value, dict):
            print(
                f"{key}: "
                + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
            )
        elif key not in ("mlflow_ui", "serve", "mlflow_serve"):
            print(f"{key}: {value}")
    if command == "demo":
        print()
        print(f"Registered model: {out['model_uri']}")
        print(f"Open the MLflow UI:     {out['mlflow_ui']}   (then http://127.0.0.1:5000)")
        print(f"Start the service:      {out['serve']}")
        print(f"Or MLflow's own server: {out['mlflow_serve']}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTERNAL:  # hand every other argument over untouched
        return _external(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "train" and args.nproc < 1:
        print(
            f"error: --nproc must be at least 1 (got {args.nproc}); use --nproc 1 for one process",
            file=sys.stderr,
        )
        return 2
    if args.command == "train" and not args.config and not args.resume:
        # no silent default: the full example takes minutes and writes a run the user did not ask for
        print(
            "error: embedkit train needs --config FILE (the example: --config "
            "pipelines/configs/example.toml; `embedkit demo` runs it end to end) or --resume RUN_ID",
            file=sys.stderr,
        )
        return 2
    from embedkit.nn import distributed

    # under torchrun, rank 0 reports; the other ranks show warnings and errors only
    main_rank = distributed.is_main()
    _setup_logging(args.verbose, args.quiet or not main_rank)
    try:
        with sigterm_raises():
            if args.command == "train" and args.nproc > 1:
                return _launch_train(args)
            out = _COMMANDS[args.command](args)
    except Terminated:
        print(
            "terminated (SIGTERM): the run is marked KILLED; continue a train run with "
            "`embedkit train --resume RUN_ID`",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(
            "interrupted: the run is marked KILLED; continue a train run with "
            "`embedkit train --resume RUN_ID`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (ConfigError, EmbedkitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .tracking import TrackingError

        if isinstance(exc, TrackingError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    if main_rank:
        _print_result(args.command, out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
