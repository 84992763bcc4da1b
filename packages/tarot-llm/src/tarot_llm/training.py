"""LoRA training with transformers' Trainer: LESS-style warm-up (one checkpoint per epoch, per-epoch mean learning
rate recorded as the checkpoint weight) and final training on a selection (``llm.md`` §2)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import InstructionExample
from .io import write_json
from .templates import IGNORE, encode_example

log = logging.getLogger(__name__)


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (LESS defaults: r 128, alpha 512, dropout 0.1 on q/k/v/o)."""

    r: int = 128
    alpha: int = 512
    dropout: float = 0.1
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TrainSettings:
    """Optimiser and loop settings (LESS defaults; ``grad_accum`` 32 with batch 1)."""

    epochs: float = 4
    lr: float = 2e-5
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 1
    grad_accum: int = 32
    max_length: int = 2048
    template: str = "tulu"
    seed: int = 0
    save_every_epoch: bool = True
    device: str = "cpu"  # auto | cpu | cuda (the HF Trainer picks cuda:0; choose a GPU with CUDA_VISIBLE_DEVICES)


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples (``input_ids``, ``labels`` with the prompt masked, ``attention_mask``).

    Examples left without any trained token after truncation are skipped (their loss would be 0/0); their ids are
    kept in ``empty``.
    """

    def __init__(self, tokenizer, examples: list[InstructionExample], template: str, max_length: int) -> None:
        self.items = []
        self.unstable = 0
        self.empty: list[str] = []
        for ex in examples:
            enc = encode_example(tokenizer, ex, template, max_length)
            self.unstable += int(not enc.stable)
            if enc.n_trained == 0:
                self.empty.append(ex.id)
                continue
            self.items.append({"input_ids": enc.input_ids, "labels": enc.labels,
                               "attention_mask": [1] * len(enc.input_ids)})
        if self.empty:
            log.warning("%d examples have no trained token after truncation and are skipped: %s", len(self.empty),
                        ", ".join(self.empty[:5]))
        if not self.items:
            raise ValueError("no example has a trained token after truncation (raise max_length)")
        if self.unstable:
            log.warning("%d of %d examples tokenised a prefix differently from the full text (mask boundaries may "
                        "be off by a token)", self.unstable, len(examples))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def pad_collate(pad_id: int):
    """Collate function padding (right) to the longest item: pad id / label -100 / attention 0, as tensors."""

    def collate(items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = max(len(it["input_ids"]) for it in items)
        out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
        for it in items:
            k = n - len(it["input_ids"])
            out["input_ids"].append(list(it["input_ids"]) + [pad_id] * k)
            out["labels"].append(list(it["labels"]) + [IGNORE] * k)
            out["attention_mask"].append(list(it["attention_mask"]) + [0] * k)
        return {key: torch.tensor(v, dtype=torch.long) for key, v in out.items()}

    return collate


def warmup_subset(n: int, percentage: float, seed: int = 42) -> np.ndarray:
    """LESS's warm-up subset: ``permutation(N)[:int(p N)]`` under ``seed`` (numpy's legacy ``RandomState``)."""
    if not 0 < percentage <= 1:
        raise ValueError(f"warm-up percentage must be in (0, 1], got {percentage}")
    k = int(percentage * n)
    if k < 1:
        raise ValueError(f"warm-up percentage {percentage} of {n} examples selects nothing")
    return np.random.RandomState(seed).permutation(n)[:k]


def epoch_mean_lrs(step_lrs: list[float], steps_per_epoch: list[int]) -> list[float]:
    """Mean learning rate of each epoch from the per-optimizer-step learning rates."""
    out, lo = [], 0
    for k in steps_per_epoch:
        chunk = step_lrs[lo: lo + k]
        out.append(float(np.mean(chunk)) if chunk else 0.0)
        lo += k
    return out


def apply_lora(model, lora: LoraSettings):
    """Wrap ``model`` with a peft LoRA adapter (task type causal LM)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets),
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def train_lora(model, tokenizer, dataset: torch.utils.data.Dataset, out_dir: str | os.PathLike,
               lora: LoraSettings, train: TrainSettings, save_checkpoints: bool, progress: bool = True
               ) -> dict[str, Any]:
    """Train a LoRA adapter with HF Trainer (AdamW torch, linear schedule, float32) on ``train.device``.

    With ``save_checkpoints`` one ``checkpoint-<step>/`` (adapter + ``optimizer.pt`` + ``trainer_state.json``) is
    written per epoch; the final adapter goes to ``<out_dir>/adapter``. Returns a summary with the learning rate of
    every optimizer step and the per-epoch means.
    """
    from tarot.app.device import pick_device
    from transformers import Trainer, TrainerCallback, TrainingArguments

    dev = pick_device(train.device)
    if dev.type == "cuda" and (dev.index or 0) != 0:
        raise ValueError(f"device: {train.device!r}: the HF Trainer trains on cuda:0 (and every visible GPU); pick "
                         "the GPU with CUDA_VISIBLE_DEVICES=<i> and device=cuda")
    out_dir = Path(out_dir)
    peft_model = apply_lora(model, lora)
    lrs: list[float] = []
    epoch_of_step: list[int] = []

    class _LrRecorder(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            epoch_of_step.append(int(math.floor(state.epoch + 1e-9)) if state.epoch is not None else 0)

    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=train.epochs, learning_rate=train.lr,
        lr_scheduler_type="linear", warmup_ratio=train.warmup_ratio, weight_decay=train.weight_decay,
        per_device_train_batch_size=train.batch_size, gradient_accumulation_steps=train.grad_accum,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, optim="adamw_torch",
        save_strategy="epoch" if save_checkpoints else "no", save_only_model=False,
        logging_steps=1, report_to=[], seed=train.seed, data_seed=train.seed, use_cpu=dev.type == "cpu",
        dataloader_num_workers=0, disable_tqdm=not progress, remove_unused_columns=False, save_safetensors=True,
    )
    trainer = Trainer(model=peft_model, args=args, train_dataset=dataset,
                      data_collator=pad_collate(tokenizer.pad_token_id), callbacks=[_LrRecorder()])
    result = trainer.train()
    final = out_dir / "adapter"
    tmp = out_dir / "adapter.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    n_epochs = math.ceil(train.epochs)
    steps_per_epoch = [sum(1 for e in epoch_of_step if e == k) for k in range(n_epochs)]
    ckpts = []
    if save_checkpoints:
        dirs = sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        means = epoch_mean_lrs(lrs, steps_per_epoch)
        if len(dirs) != n_epochs:
            raise RuntimeError(f"{out_dir}: expected {n_epochs} epoch checkpoints, found {len(dirs)}")
        for k, d in enumerate(dirs):
            ckpts.append({"name": f"epoch{k + 1}", "path": str(d), "step": int(d.name.split("-")[1]),
                          "epoch": k + 1, "lr_mean": means[k]})
    return {"train_loss": float(result.training_loss), "global_steps": int(result.global_step),
            "step_lrs": lrs, "steps_per_epoch": steps_per_epoch, "checkpoints": ckpts,
            "adapter": str(final), "trainable_parameters": int(sum(p.numel() for p in peft_model.parameters()
                                                                    if p.requires_grad))}


def run_warmup(model_path: str, pool: list[InstructionExample], out_dir: str | os.PathLike, percentage: float = 0.05,
               subset_seed: int = 42, lora: LoraSettings | None = None, train: TrainSettings | None = None,
               progress: bool = True, cache_dir: str | None = None, record: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """LESS warm-up: LoRA training on a random ``percentage`` of the pool; writes ``warmup.json`` last.

    ``warmup.json`` lists the epoch checkpoints with their mean learning rates (the LR weights of the gradient
    features); its presence marks a complete warm-up. ``record`` adds fields to it (e.g. the inputs' fingerprint).
    """
    from .models import load_model_and_tokenizer

    lora, train = lora or LoraSettings(), train or TrainSettings()
    out_dir = Path(out_dir)
    (out_dir / "warmup.json").unlink(missing_ok=True)
    model, tok = load_model_and_tokenizer(model_path, cache_dir)
    idx = warmup_subset(len(pool), percentage, subset_seed)
    ds = EncodedDataset(tok, [pool[i] for i in idx], train.template, train.max_length)
    torch.manual_seed(train.seed)
    summary = train_lora(model, tok, ds, out_dir, lora, train, save_checkpoints=True, progress=progress)
    summary.update({"model": model_path, "subset_indices": [int(i) for i in idx],
                    "subset_ids": [pool[i].id for i in idx], "percentage": percentage,
                    "subset_seed": subset_seed, "lora": lora.__dict__,
                    "train": train.__dict__, "unstable_prefix_examples": ds.unstable,
                    "skipped_no_trained_token": ds.empty, **(record or {})})
    write_json(out_dir / "warmup.json", summary)
    return summary


def load_warmup(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``warmup.json`` (error if the warm-up did not finish)."""
    p = Path(out_dir) / "warmup.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: missing; the warm-up has not completed (run `tarot-llm warmup`)")
    return json.loads(p.read_text(encoding="utf-8"))
