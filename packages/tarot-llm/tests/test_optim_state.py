"""Adam moments from both checkpoint layouts, written by real 2-step trainings, and LESS's Adam formula."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from tarot_llm.optim_state import (
    AdamPreconditioner,
    OptimizerStateError,
    adam_precondition,
    load_adam_moments,
    normalize_name,
    trainer_index_order,
)
from tarot_llm.training import LoraSettings, apply_lora


def test_adam_formula_hand_computed():
    g = torch.tensor([0.5, 1e-6, 0.0, -2.0])
    m = torch.tensor([0.1, 0.0, 0.0, 0.3])
    v = torch.tensor([0.04, 0.0, 0.0, 1.0])
    # m' = 0.9 m + 0.1 g ; v' = 0.999 v + 0.001 g^2 ; out = m' / sqrt(v' + 1e-8), no bias correction
    expected = [0.14 / math.sqrt(0.04021 + 1e-8),
                1e-7 / math.sqrt(1e-15 + 1e-8),     # eps inside the sqrt: ~1e-3 (eps outside would give ~2.4)
                0.0,
                0.07 / math.sqrt(1.003 + 1e-8)]
    out = adam_precondition(g, m, v)
    assert torch.allclose(out.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    assert abs(out[1].item() - 9.9999995e-4) < 1e-9
    # batch broadcasting through the preconditioner hook
    class Ck:
        name = "c"
        extra = {"optimizer_state": {"w": (m.reshape(2, 2), v.reshape(2, 2))}}
    batch = torch.stack([g.reshape(2, 2), 2 * g.reshape(2, 2)])
    res = AdamPreconditioner()({"w": batch}, Ck())["w"]
    assert torch.allclose(res[0], out.reshape(2, 2)) and res.shape == (2, 2, 2)
    with pytest.raises(OptimizerStateError, match="no optimizer moments for parameter 'other'"):
        AdamPreconditioner()({"other": batch}, Ck())


def peft_model(model_dir, extra_trainable=True):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(model_dir),
                       LoraSettings(r=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"]))
    if extra_trainable:  # no-decay group members interleaved in named_parameters order
        for name, p in model.named_parameters():
            if name.endswith("layers.0.input_layernorm.weight") or name.endswith("model.norm.weight"):
                p.requires_grad_(True)
    return model


def test_trainer_optimizer_pt_index_keys(tmp_path, tiny_model_dir, tiny_tokenizer):
    from tarot_llm.training import pad_collate
    from transformers import Trainer, TrainingArguments

    model = peft_model(tiny_model_dir)
    order = trainer_index_order(model)
    assert [n.split(".")[-2] for n in order[1]] == ["input_layernorm", "norm"] and len(order[0]) == 8
    data = [{"input_ids": [1, 5, 6, 7 + i], "labels": [1, 5, 6, 7 + i], "attention_mask": [1] * 4} for i in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, save_strategy="steps", save_steps=2,
                             per_device_train_batch_size=2, learning_rate=1e-2, weight_decay=0.1, report_to=[],
                             use_cpu=True, optim="adamw_torch", disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=pad_collate(0))
    trainer.train()
    ckpt = tmp_path / "checkpoint-2"
    assert (ckpt / "optimizer.pt").exists() and not (ckpt / "optimizer.bin").exists()
    raw = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert all(isinstance(k, int) for k in raw["state"])
    loaded = load_adam_moments(ckpt, peft_model(tiny_model_dir))
    assert loaded.key_style == "index" and loaded.step == 2
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(loaded.moments) == len(trainable) == 10
    for name, p in trainable:
        m, v = loaded.moments[name]
        assert torch.equal(m, opt.state[p]["exp_avg"]) and torch.equal(v, opt.state[p]["exp_avg_sq"]), name
    # the same file against a model with different trainable parameters fails with one line
    with pytest.raises(OptimizerStateError) as exc:
        load_adam_moments(ckpt, peft_model(tiny_model_dir, extra_trainable=False))
    assert "optimizer.pt" in str(exc.value) and "\n" not in str(exc.value)


FSDP_SCRIPT = textwrap.dedent('''
    import os, sys, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3])
    dist.init_process_group("gloo", rank=0, world_size=1)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, StateDictType
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig
    sys.path.insert(0, sys.argv[4])
    from test_optim_state import peft_model
    model = peft_model(sys.argv[1])
    f = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
    opt = torch.optim.AdamW([p for p in f.parameters() if p.requires_grad], lr=1e-2)
    x = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])
    for _ in range(2):
        f(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
    with FSDP.state_dict_type(f, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True),
                              FullOptimStateDictConfig(offload_to_cpu=True)):
        osd = FSDP.optim_state_dict(f, opt)
    torch.save(osd, os.path.join(sys.argv[2], "optimizer.bin"))  # what accelerate's save_fsdp_optimizer writes
    ref = {n: (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
           for n, p in f.named_parameters() if p.requires_grad}
    torch.save(ref, os.path.join(sys.argv[2], "reference.pt"))
    dist.destroy_process_group()
''')


def test_fsdp_optimizer_bin_name_keys(tmp_path, tiny_model_dir):
    from pathlib import Path

    script = tmp_path / "fsdp_two_steps.py"
    script.write_text(FSDP_SCRIPT)
    port = str(29500 + (hash(str(tmp_path)) % 400))
    proc = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(tmp_path), port,
                           str(Path(__file__).parent)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = torch.load(tmp_path / "optimizer.bin", weights_only=True)
    assert all(isinstance(k, str) for k in raw["state"])
    loaded = load_adam_moments(tmp_path, peft_model(tiny_model_dir))
    assert loaded.key_style == "name"
    ref = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert len(ref) == len(loaded.moments) == 10
    for name, (m, v) in ref.items():
        lm, lv = loaded.moments[normalize_name(name)]
        assert torch.equal(lm, m) and torch.equal(lv, v), name


def test_missing_file_and_shape_mismatch(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="neither optimizer.bin"):
        load_adam_moments(tmp_path, peft_model(tiny_model_dir))
    model = peft_model(tiny_model_dir, extra_trainable=False)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    state = {n: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)} for n in names}
    torch.save({"state": state, "param_groups": [{"params": names, "lr": 0.1}]}, tmp_path / "optimizer.bin")
    with pytest.raises(OptimizerStateError, match="has shape \\(3,\\)"):
        load_adam_moments(tmp_path, model)
