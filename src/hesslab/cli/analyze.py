"""``hesslab analyze``: the curvature summary of the user's own model on a data set.

Loads the model (a ``file.py:factory`` or a zoo name, optionally ``--weights``) and the
data, checks them against each other with one forward pass, and runs
:func:`hesslab.analysis.analyze` (data-parallel under ``torchrun``).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hesslab.cli.common import (
    CHECKPOINTS_DIR,
    _already_complete,
    _analysis_config,
    _check_resume,
    _device,
    _dtype,
    _finish,
    _model_file,
    _one_line,
    _open_run,
    _Stages,
    _user_code,
)
from hesslab.errors import ConfigurationError, DataError


def _load_factory(spec: str) -> Any:
    """The callable ``factory`` of ``--model path/to/file.py:factory``."""
    if ":" not in spec:
        raise ConfigurationError(f"--model must look like path/to/file.py:factory, got {spec!r}")
    path, _, name = spec.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(
            f"--model file {file} does not exist; pass path/to/file.py:factory with an "
            "existing file"
        )
    mod_spec = importlib.util.spec_from_file_location(f"hesslab_user_{file.stem}", file)
    if mod_spec is None or mod_spec.loader is None:
        raise ConfigurationError(f"cannot import {file} as a Python module; pass a .py file")
    module = importlib.util.module_from_spec(mod_spec)
    with _user_code(
        f"cannot import the --model file {file}",
        "fix the file (it must run with `python " + str(file) + "`)",
        file,
    ):
        mod_spec.loader.exec_module(module)
    if not hasattr(module, name):
        public = sorted(n for n, v in vars(module).items() if callable(v) and n[0] != "_")
        raise ConfigurationError(
            f"{file} defines no {name!r}; callables it defines: {', '.join(public) or 'none'}"
        )
    factory = getattr(module, name)
    if not callable(factory):
        raise ConfigurationError(f"{spec} is not callable; name a function returning a Module")
    return factory


def _build_model(spec: str) -> torch.nn.Module:
    """The ``nn.Module`` that ``--model FILE:factory`` builds."""
    factory = _load_factory(spec)
    file = spec.rpartition(":")[0]
    with _user_code(f"the --model factory {spec}() raised", "fix the factory", file):
        model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ConfigurationError(
            f"{spec} returned a {type(model).__name__}, not a torch.nn.Module; return the model"
        )
    return model


def _names(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _load_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``--weights`` (a state_dict file) into ``model``, or say why it cannot be."""
    fix = "save them with torch.save(model.state_dict(), path) from the model --model builds"
    if not Path(path).is_file():
        raise DataError(f"--weights {path}: no such file; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"--weights {path} cannot be read by torch.load(weights_only=True) "
            f"({_one_line(e)[:160]}); the file is truncated, not a PyTorch file, or holds "
            f"pickled objects: {fix}"
        ) from e
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"--weights {path} holds a {type(state).__name__}, not a state_dict; {fix}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    sizes = [
        f"{k} (file {list(state[k].shape)}, model {list(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [f"missing {_names(missing)}"] if missing else []
    problems += [f"unexpected {_names(extra)}"] if extra else []
    problems += [f"size mismatch for {_names(sizes, 2)}"] if sizes else []
    if problems:
        hint = ""
        if extra and all(k.startswith("module.") for k in extra):
            hint = " (keys start with 'module.': save model.module.state_dict())"
        raise DataError(
            f"--weights {path} do not fit the model of --model: {'; '.join(problems)}{hint}; {fix}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"--weights {path}: {_names(bad)} hold NaN or inf values; {fix}")
    model.load_state_dict(state)


def _check_model_on_data(args: argparse.Namespace, model: torch.nn.Module, part: Any) -> None:
    """One forward pass on the first points, and the labels against the outputs.

    Catches what would otherwise surface deep in the first curvature product: a model
    whose input size does not fit the data, outputs that are not a tensor, class labels
    outside ``0..C-1`` for the model's ``C`` outputs (``ce``, and ``mse`` with one-hot
    targets) and regression targets whose shape differs from the outputs' (``mse``).
    """
    n = min(len(part), args.batch_size or len(part), 64)
    x = part.x[:n].to(next(model.parameters()).device)
    with (
        _user_code(
            f"the model's forward pass on the first {n} points of --data {args.data} failed",
            f"the data has inputs of shape {list(part.x.shape[1:])} per point: make --model "
            "accept them, or pass the data it was built for",
            _model_file(args),
        ),
        torch.no_grad(),
    ):
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ConfigurationError(
            f"the model returns a {type(out).__name__}, not a tensor of outputs; wrap it so "
            "that forward returns the logits (or use the Python API with a custom loss)"
        )
    _check_targets(args, out, part.y)


def _shape_n(t: torch.Tensor) -> str:
    """``[N, d1, ...]``: the shape of a batch with its leading dimension named N."""
    return "[" + ", ".join(["N", *map(str, t.shape[1:])]) + "]"


def _check_targets(args: argparse.Namespace, out: torch.Tensor, y: torch.Tensor) -> None:
    shape = list(out.shape[1:])
    if y.is_floating_point():
        if args.loss == "ce":
            raise DataError(
                f"--loss ce needs integer class labels, but --data {args.data} holds floating "
                "targets (regression); use --loss mse, or store the labels as integers"
            )
        if list(y.shape[1:]) != shape:
            raise DataError(
                f"--loss mse: --data {args.data} has targets of shape {_shape_n(y)} but the "
                f"model outputs {_shape_n(out)} (a broadcast would give a wrong loss); store "
                f"targets of shape {_shape_n(out)}, or make the model output {_shape_n(y)}"
            )
        return
    if out.ndim < 2 or (args.loss == "mse" and out.ndim != 2):
        need = "[N, C] (class scores)" if args.loss == "ce" else "[N, C] for one-hot targets"
        raise DataError(
            f"--loss {args.loss} with class labels needs model outputs {need}, got "
            f"{list(out.shape)}; make the model output one score per class"
        )
    shape_y = y.shape
    y = y[y != -100]  # ignore_index of cross-entropy and the LM losses: not a label
    if not y.numel():
        return
    seq = args.loss in ("causal_lm", "masked_lm") or (
        out.ndim == 3 and out.shape[:-1] == shape_y
    )  # [N, T, V] logits with [N, T] labels: the classes are the last dimension
    lo, hi, classes = int(y.min()), int(y.max()), out.shape[-1 if seq else 1]
    if lo < 0 or hi >= classes:
        raise DataError(
            f"--data {args.data} has labels in [{lo}, {hi}] but the model outputs {classes} "
            f"scores per point (labels must be 0..{classes - 1}); give the model "
            f"{max(hi + 1, classes)} outputs, or relabel the data"
        )


def _analyze_inputs(args: argparse.Namespace) -> tuple[torch.nn.Module, Any, torch.device]:
    """The model (with ``--weights``, on ``--device``) and the data part to analyse."""
    from hesslab.data import load_data

    dtype = _dtype(args.dtype)
    device = _device(args.device)
    loaded = load_data(args.data, dtype=dtype)
    model = _make_model(args, loaded)
    if args.weights:
        _load_weights(model, args.weights)
    if next(model.parameters(), None) is None:
        raise ConfigurationError(f"{args.model} builds a model without parameters")
    model = model.to(device=device, dtype=dtype).eval()
    part = getattr(loaded, args.split, None) if hasattr(loaded, "train") else loaded
    if part is None:
        raise DataError(
            f"data {args.data!r} has no {args.split!r} split; use --split train (or store "
            "x_test and y_test in the file)"
        )
    if args.max_points and len(part) > args.max_points:
        part = part.subset(torch.arange(args.max_points))
    _check_model_on_data(args, model, part)
    return model, part, device


def _make_model(args: argparse.Namespace, data: Any) -> torch.nn.Module:
    """``--model``: a zoo name (sizes from the data, ``--model-option`` s) or ``file.py:fn``."""
    from hesslab.experiments._base import parse_value
    from hesslab.models import MODELS, build_model

    options = {}
    for item in args.model_option or []:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ConfigurationError(f"--model-option {item!r} must look like key=value")
        options[key.strip()] = parse_value(value.strip())
    if ":" not in args.model and args.model.lower().replace("-", "_") in MODELS:
        return build_model(args.model, data, **{"seed": args.seed, **options})
    if options:
        raise ConfigurationError("--model-option applies to zoo models (--model gpt, ...) only")
    return _build_model(args.model)


def cmd_analyze(args: argparse.Namespace) -> int:
    """``hesslab analyze``: the curvature summary of ``--model`` on ``--data``; exit code."""
    from hesslab import Objective
    from hesslab.analysis import analyze
    from hesslab.report.run import RunDir

    t0 = time.perf_counter()
    if args.loss is None:  # the bundled text is a language-modelling corpus
        args.loss = "causal_lm" if args.data == "text" else "ce"
    model, part, device = _analyze_inputs(args)
    num_points = len(part)
    wrap, rank, world = _setup_distributed(args, device)
    if world > 1:
        from hesslab.distributed import shard_indices

        part = part.subset(torch.tensor(list(shard_indices(len(part), rank, world))))
    batches = part.loader(args.batch_size) if args.batch_size else (part.x, part.y)
    obj = Objective(model, args.loss, batches, params=args.params, device=device)
    cfg = _analysis_config(args, exact_limit=args.exact_limit)
    shard_info = None
    if getattr(args, "shard", None):
        wrap, cfg, shard_info = _sharded(args, model, batches, cfg)
    config = {
        "command": "analyze",
        "model": args.model,
        "model_options": list(args.model_option or []),
        "weights": args.weights,
        "data": args.data,
        "split": args.split,
        "num_points": num_points,
        "loss": args.loss,
        "params": args.params,
        "device": str(device),
        "dtype": args.dtype,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "analysis": cfg,
        "processes": world,
    }
    if shard_info is not None:
        config["shard"] = shard_info
    if rank != 0:  # every rank computes; only rank 0 writes the run folder
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            # read-only checkpoints: on resume the ones rank 0 wrote; on a fresh run a
            # folder that stays empty (a checkpointed solver runs the same collectives
            # as rank 0's, e.g. SLQ probes one by one)
            ckpt_in = None if shard_info else Path(tmp) / CHECKPOINTS_DIR
            if args.resume:
                resumed = _check_resume(args, config)
                if resumed is None:
                    return 0
                ckpt_in = resumed / CHECKPOINTS_DIR
            analyze(
                obj,
                RunDir.create(tmp, "analyze", config),
                cfg,
                wrap=wrap,
                checkpoint_dir=ckpt_in,
                write_checkpoints=False,
            )
        return 0
    run = _open_run(args, "analyze", config, title=f"hesslab analyze: {args.model}")
    if run is None:
        return _already_complete(args)
    stages = _Stages(len(cfg.what) + 2, "analyze", args.quiet)
    ckpt = None if shard_info else run.path / CHECKPOINTS_DIR  # stages hold rank 0's shards
    summary = analyze(obj, run, cfg, progress=stages, wrap=wrap, checkpoint_dir=ckpt)
    stages.close()
    _finish(run, summary, time.perf_counter() - t0)
    return 0


#: The analysis parts that run on sharded vectors (the others need whole vectors or blocks).
SHARDED_PARTS = ("eig", "trace", "density")


def _sharded(args: argparse.Namespace, model: torch.nn.Module, batches: Any, cfg: Any) -> tuple:
    """``--shard``: the FSDP2-sharded copy of ``model`` and its operator.

    Returns ``(wrap, cfg, info)``: ``wrap`` maps the analysis' Hessian to the
    :class:`~hesslab.sharded.ShardedHessianOperator` (the same on every rank), ``cfg``
    keeps the parts that run on sharded vectors (eig, trace, density; no dense exact
    spectrum), ``info`` records the route and the parts skipped with the reason. Stage
    checkpoints are off (a stage's eigenvectors are the writing rank's shard).
    """
    import copy
    import dataclasses

    import torch.distributed as dist

    if not dist.is_initialized():
        raise ConfigurationError(
            "--shard must run under torchrun, e.g. "
            "torchrun --nproc_per_node 2 -m hesslab.cli analyze --shard ..."
        )
    if args.params:
        raise ConfigurationError("--shard takes the whole model; drop --params")
    from torch.distributed.fsdp import fully_shard

    from hesslab.sharded import ShardedHessianOperator

    sharded = copy.deepcopy(model)  # the plain model stays for the analysis' bookkeeping
    for child in sharded.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child)
    fully_shard(sharded)
    op = ShardedHessianOperator(sharded, args.loss, batches, route=args.shard)
    kept = tuple(w for w in cfg.what if w in SHARDED_PARTS)
    skipped = [w for w in cfg.what if w not in SHARDED_PARTS]
    if not kept:
        raise ConfigurationError(f"--shard runs {','.join(SHARDED_PARTS)}; pick some in --what")
    cfg = dataclasses.replace(cfg, what=kept, exact_limit=0)
    info = {
        "route": args.shard,
        "local_size": op.shape[0],
        "skipped": skipped,
        "reason": "layer blocks, the GGN and class structure need whole vectors; no dense "
        "exact spectrum; no stage checkpoints (eigenvectors are per-rank shards)",
    }
    return (lambda _H: op), cfg, info


def _setup_distributed(args: argparse.Namespace, device: torch.device) -> tuple[Any, int, int]:
    """Join the process group when launched by torchrun (or with ``--distributed``).

    Returns ``(wrap, rank, world_size)``; ``wrap`` turns a shard's operator into the
    operator over all shards (:class:`hesslab.distributed.DistributedOperator`).
    """
    import os

    import torch.distributed as dist

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not (args.distributed or launched or getattr(args, "shard", None)):
        return None, 0, 1
    if not dist.is_available():
        raise ConfigurationError("--distributed needs a PyTorch build with torch.distributed")
    if "RANK" not in os.environ:
        flag = "--shard" if getattr(args, "shard", None) else "--distributed"
        raise ConfigurationError(
            f"{flag} must run under torchrun, e.g. "
            f"torchrun --nproc_per_node 2 -m hesslab.cli analyze {flag} ..."
        )
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    from hesslab.distributed import DistributedOperator

    return DistributedOperator, dist.get_rank(), dist.get_world_size()
