"""The monitor inside the Hugging Face Trainer and Lightning: measurements logged, the
training run unchanged bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import hesslab
from hesslab.train import JsonlSink, SpectrumMonitor


def _monitor(data, loss, path, every=3):
    return SpectrumMonitor(
        data,
        loss,
        every=every,
        quantities=("lambda_max", "trace"),
        k=1,
        trace_matvecs=6,
        tol=1e-4,
        sinks=[JsonlSink(path)],
        seed=0,
    )


# ---------------------------------------------------------------------- Hugging Face
def _hf_run(tmp_path, with_callback: bool):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from hesslab.integrations import HFSpectrumCallback

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=13,
        n_positions=8,
        n_embd=8,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip  (default dropout 0.1: training draws random numbers)
    model = transformers.GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 13, (16, 8), generator=g)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": ids[i]}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / ("hf_cb" if with_callback else "hf")),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        save_strategy="no",
        disable_tqdm=True,
    )

    class Reporter(transformers.TrainerCallback):
        """What a reporting integration (TensorBoardCallback, W&B, ...) receives: on_log."""

        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append((state.global_step, dict(logs or {})))

    trainer = transformers.Trainer(model=model, args=args, train_dataset=DS())
    trainer.reporter = Reporter()
    trainer.add_callback(trainer.reporter)
    path = tmp_path / "hf.jsonl"
    if with_callback:
        analysis = [{"input_ids": ids[:8]}]
        HFSpectrumCallback.attach(trainer, _monitor(analysis, "causal_lm", path))
    trainer.train()
    return model, trainer, path


def test_hf_trainer_callback_logs_and_changes_nothing(tmp_path):
    base, _, _ = _hf_run(tmp_path, with_callback=False)
    model, trainer, path = _hf_run(tmp_path, with_callback=True)
    for (n, a), (_, b) in zip(base.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert all(r["lambda/1"] > 0 for r in records)
    logged = [h for h in trainer.state.log_history if "hessian/lambda/1" in h]
    assert [h["step"] for h in logged] == [3, 6]
    assert logged[-1]["hessian/lambda/1"] == pytest.approx(records[-1]["lambda/1"])
    # the trainer's reporting integrations get the values through on_log
    reported = [(step, logs) for step, logs in trainer.reporter.logs if "hessian/trace" in logs]
    assert [step for step, _ in reported] == [3, 6]
    assert reported[-1][1]["hessian/lambda/1"] == pytest.approx(records[-1]["lambda/1"])
    # the trainer's own log of steps 3 and 6 survives the callback's (Trainer.log clears
    # control.should_log; the callback restores it)
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == list(range(1, 7))


# ------------------------------------------------------------------------- Lightning
def _lightning_run(tmp_path, with_callback: bool):
    L = pytest.importorskip("lightning.pytorch")
    from hesslab.integrations import LightningSpectrumCallback

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, i):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Module()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    logger = L.loggers.CSVLogger(str(tmp_path), name="cb" if with_callback else "plain")
    path = tmp_path / "pl.jsonl"
    callbacks = [LightningSpectrumCallback(_monitor((x, y), "ce", path))] if with_callback else []
    trainer = L.Trainer(
        max_steps=6,
        logger=logger,
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accumulate_grad_batches=2,  # two batch ends per optimizer step: measured once
    )
    trainer.fit(module, loader)
    return module, logger, path


def test_lightning_callback_logs_and_changes_nothing(tmp_path):
    base, _, _ = _lightning_run(tmp_path, with_callback=False)
    module, logger, path = _lightning_run(tmp_path, with_callback=True)
    for (n, a), (_, b) in zip(base.state_dict().items(), module.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    metrics = (logger.log_dir + "/metrics.csv") if hasattr(logger, "log_dir") else None
    text = open(metrics).read()
    assert "hessian/lambda/1" in text and "hessian/trace" in text


def test_build_monitor_takes_a_monitor_or_a_function(tmp_path):
    from hesslab.integrations import build_monitor

    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    monitor = _monitor((x, y), "ce", tmp_path / "m.jsonl")
    assert build_monitor(monitor) is monitor and build_monitor(lambda: monitor) is monitor
    with pytest.raises(hesslab.ConfigurationError, match="SpectrumMonitor or a function"):
        build_monitor(lambda: 3)


def test_missing_package_message(monkeypatch):
    import builtins

    import hesslab.integrations as integ

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("lightning") or name.startswith("pytorch_lightning"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(integ, "_MADE", {})
    with pytest.raises(hesslab.ConfigurationError, match="pip install 'hesslab\\[lightning\\]'"):
        integ.LightningSpectrumCallback  # noqa: B018
