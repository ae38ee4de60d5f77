"""The trainer callbacks under the trainers' own DDP: a script for ``torchrun``.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_trainers.py
{hf|lightning} OUT`` trains a tiny float64 model twice on CPU (gloo), without and with the
callback, in the same process group, and writes per rank to ``OUT``: ``rank{r}.pt`` (the
final weights of both runs, the monitor's records and base seed, the keys the trainer
logged) and the monitor's sink ``rank{r}.jsonl`` (only rank 0 may write it). The analysis
set is :func:`analysis` (all of it); each rank's monitor measures its shard of it with
``distributed=True`` (``snapshots``: the weights each measurement saw).
``tests/test_integrations_ddp.py`` checks the files against a
single-process measurement of the whole analysis set.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from hesslab.distributed import shard_indices
from hesslab.train import JsonlSink, SpectrumMonitor

STEPS, EVERY = 4, 2
QUANTITIES = ("lambda_max", "trace")


def monitor_kwargs() -> dict:
    """The monitor's settings (the test builds its single-process reference with them)."""
    return dict(every=EVERY, quantities=QUANTITIES, k=1, trace_matvecs=6, tol=1e-12)


def analysis(kind: str) -> tuple:
    """The whole analysis set of ``kind``, float64 where it is features."""
    g = torch.Generator().manual_seed(5)
    if kind == "hf":
        return (torch.randint(0, 13, (8, 8), generator=g),)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (12,), generator=g)


def _shard(kind: str, rank: int, world: int):
    idx = list(shard_indices(len(analysis(kind)[0]), rank, world))
    if kind == "hf":
        return [{"input_ids": analysis(kind)[0][idx]}]
    x, y = analysis(kind)
    return x[idx], y[idx]


def _factory(kind: str, out: str):
    """A function building this rank's monitor once the trainer has set up the group."""

    def build() -> SpectrumMonitor:
        import torch.distributed as dist

        rank, world = dist.get_rank(), dist.get_world_size()
        sink = JsonlSink(os.path.join(out, f"rank{rank}.jsonl"))
        loss = "causal_lm" if kind == "hf" else "ce"
        data = _shard(kind, rank, world)
        monitor = SpectrumMonitor(
            data, loss, sinks=[sink], seed=rank, distributed=True, **monitor_kwargs()
        )
        _keep_snapshots(monitor)
        return monitor

    return build


def _keep_snapshots(monitor: SpectrumMonitor) -> None:
    """Record a copy of the weights each measurement saw (``monitor.snapshots``)."""
    measure, monitor.snapshots = monitor.measure, []

    def measure_and_keep(model: nn.Module, step: int):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        monitor.snapshots.append((step, state))
        return measure(model, step)

    monitor.measure = measure_and_keep


def hf_model():
    """A tiny float64 GPT-2 (dropout 0.1: training draws random numbers)."""
    import transformers

    cfg = transformers.GPT2Config(
        vocab_size=13, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg).double()


def _hf(out: str, with_callback: bool) -> tuple[dict, object, list]:
    import transformers

    from hesslab.integrations import HFSpectrumCallback

    ids = torch.randint(0, 13, (16, 8), generator=torch.Generator().manual_seed(1))

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": ids[i]}

    args = transformers.TrainingArguments(
        output_dir=os.path.join(out, f"hf{int(with_callback)}"), max_steps=STEPS,
        per_device_train_batch_size=2, learning_rate=1e-2, logging_steps=1, report_to=[],
        use_cpu=True, ddp_backend="gloo", seed=0, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf_model()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=DS())
    cb = HFSpectrumCallback.attach(trainer, _factory("hf", out)) if with_callback else None
    trainer.train()
    logged = [sorted(h) for h in trainer.state.log_history]
    return model.state_dict(), cb, logged


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


def _lightning(out: str, with_callback: bool) -> tuple[dict, object, list]:
    import lightning.pytorch as L

    from hesslab.integrations import LightningSpectrumCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = MLP().double()

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, i):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    L.seed_everything(0, verbose=False)
    module = Module()

    class Recorder(L.loggers.Logger):
        """Records every ``log_metrics`` call on every rank (Lightning's loggers are
        rank-zero-only themselves: this one shows what the callback sends)."""

        name, version = "recorder", 0

        def __init__(self):
            super().__init__()
            self.calls = []

        def log_metrics(self, metrics, step=None):
            self.calls.append((step, sorted(metrics)))

        def log_hyperparams(self, *args, **kwargs):
            pass

    csv = L.loggers.CSVLogger(out, name=f"pl{int(with_callback)}")
    logger = [csv, Recorder()]
    cb = LightningSpectrumCallback(_factory("lightning", out)) if with_callback else None
    trainer = L.Trainer(
        max_steps=STEPS, logger=logger, callbacks=[cb] if cb else [], accelerator="cpu",
        devices=2, strategy="ddp", enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(module, loader)
    metrics = os.path.join(csv.log_dir, "metrics.csv")
    header = open(metrics).read().splitlines()[:1] if os.path.exists(metrics) else []
    return module.model.state_dict(), cb, {"csv": header, "calls": logger[1].calls}


def main(kind: str, out: str) -> None:
    torch.set_num_threads(1)
    run = _hf if kind == "hf" else _lightning
    plain, _, _ = run(out, with_callback=False)
    weights, cb, logged = run(out, with_callback=True)
    import torch.distributed as dist

    monitor = cb.monitor
    result = {
        "plain": plain,
        "weights": weights,
        "records": [m.record() for m in monitor.measurements],
        "snapshots": monitor.snapshots,
        "seed": monitor.seed,
        "distributed": monitor.distributed,
        "logged": logged,
        "world": dist.get_world_size(),
    }
    torch.save(result, os.path.join(out, f"rank{dist.get_rank()}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
