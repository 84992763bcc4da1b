"""tarot-core's factorised gradient features on a peft LoRA model: the hooks see lora_A and lora_B (plain
nn.Linear modules called as modules) and the blocks equal the Kronecker projection of the loop's LoRA gradients;
the adapter's cut of the right padding leaves the loss unchanged."""

from __future__ import annotations

import torch
from tarot.features.factorized import FactorizedGradientFeaturizer
from tarot.features.gradients import GradientFeaturizer
from tarot_llm.pipeline import CausalLMLoss
from tarot_llm.training import pad_collate
from test_optim_state import peft_model


def _batch(tok) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    items = []
    for length, prompt in ((9, 4), (6, 2), (12, 7)):
        ids = torch.randint(3, len(tok), (length,), generator=g).tolist()
        items.append({"input_ids": ids, "attention_mask": [1] * length,
                      "labels": [-100] * prompt + ids[prompt:]})
    return pad_collate(tok.pad_token_id)(items)


def test_factorised_lora_features_equal_the_kronecker_projection(tiny_model_dir, tiny_tokenizer):
    model = peft_model(tiny_model_dir, extra_trainable=False)
    batch = _batch(tiny_tokenizer)
    adapter = CausalLMLoss()
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for i in range(3):  # the padded row, whole, gives the loss of the cut row
        row = {k: v[i] for k, v in batch.items()}
        whole = model(**{k: v.unsqueeze(0) for k, v in row.items()}).loss
        torch.testing.assert_close(adapter.loss(model, params, buffers, row), whole, rtol=1e-5, atol=1e-6)

    fz = FactorizedGradientFeaturizer(model, adapter, proj_dim=64, factor_dim=16)
    assert fz.mode == "loop" and fz.left_out == []  # the adapter has no batched losses
    names = [ly.name for ly in fz.layers]
    assert len(names) == 8 and all(n.endswith(("lora_A.default", "lora_B.default")) for n in names)
    blocks = fz.per_sample_grads(batch)
    grads = GradientFeaturizer(model, adapter, proj_dim=8, mode="loop").per_sample_grads(batch)
    for ly in fz.layers:
        g = grads[ly.weight].reshape(3, ly.d_out, ly.d_in)
        p_in = torch.eye(ly.d_in) if ly.p_in is None else ly.p_in
        p_out = torch.eye(ly.d_out) if ly.p_out is None else ly.p_out
        ref = p_out @ g @ p_in.T
        torch.testing.assert_close(blocks[ly.name], ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()) + 1e-9)
    lora_a = fz.layers[0]
    assert (lora_a.d_out, lora_a.p_out is None, lora_a.d_in, lora_a.k_in) == (4, True, 32, 16)


def test_the_llm_config_refuses_the_factorised_projector():
    """LESS's candidate gradients are Adam-preconditioned (elementwise m/sqrt(v)), which does not factorise."""
    import pytest
    from tarot_llm.config import ConfigError, load_config

    assert load_config(None, ["features.projector=sjlt"])["features"]["projector"] == "sjlt"
    with pytest.raises(ConfigError, match="factorized cannot carry LESS's Adam-preconditioned"):
        load_config(None, ["features.projector=factorized"])
