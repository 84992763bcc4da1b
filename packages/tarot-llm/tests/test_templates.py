"""Tulu / chat-template rendering with prompt tokens masked out of the loss."""

from __future__ import annotations

from tarot_llm.templates import IGNORE, encode_completion, encode_messages, render_tulu, wrap_query

CONV = [{"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Germany?"},
        {"role": "assistant", "content": "Berlin."}]


def trained_spans(tok, enc):
    """Decoded runs of consecutive trained label positions."""
    spans, cur = [], []
    for i, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE:
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


def test_render_tulu_exact():
    assert render_tulu(CONV[:3], "</s>") == ("<|system|>\nYou are helpful.\n<|user|>\nWhat is the capital of France?\n"
                                             "<|assistant|>\nParis.</s>\n")


def test_tulu_masking_multiturn(tiny_tokenizer):
    enc = encode_messages(tiny_tokenizer, CONV, "tulu")
    assert enc.stable
    assert enc.input_ids[0] == tiny_tokenizer.bos_token_id
    assert trained_spans(tiny_tokenizer, enc) == ["Paris.</s>\n", "Berlin.</s>\n"]
    assert len(enc.labels) == len(enc.input_ids)


def test_chat_template_masking(tiny_tokenizer):
    enc = encode_messages(tiny_tokenizer, CONV, "chat")
    assert enc.stable
    assert trained_spans(tiny_tokenizer, enc) == ["Paris.<|im_end|>\n", "Berlin.<|im_end|>\n"]


def test_completion_schema_masks_prompt_and_adds_space(tiny_tokenizer):
    enc = encode_completion(tiny_tokenizer, "Question: 2+2=", "4")
    assert trained_spans(tiny_tokenizer, enc) == [" 4</s>"]
    full = tiny_tokenizer.decode(enc.input_ids, skip_special_tokens=False)
    assert full == "<s>Question: 2+2= 4</s>"
    enc2 = encode_completion(tiny_tokenizer, "Q: ", "yes", add_eos=False)
    assert trained_spans(tiny_tokenizer, enc2) == ["yes"]


def test_truncation_keeps_lengths_consistent(tiny_tokenizer):
    enc = encode_messages(tiny_tokenizer, CONV, "tulu", max_length=12)
    assert len(enc.input_ids) == 12 == len(enc.labels)
    assert enc.n_trained == 0  # only the prompt fits


def test_wrap_query(tiny_tokenizer):
    assert wrap_query(tiny_tokenizer, "Q?", "A:") == "<|user|>\nQ?\n<|assistant|>\nA:"
    assert wrap_query(tiny_tokenizer, "Q?", "A:", "chat") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA:"


def test_training_dataset_skips_fully_truncated_examples(tiny_tokenizer):
    import pytest
    from tarot_llm.data import InstructionExample
    from tarot_llm.training import EncodedDataset, pad_collate

    long = InstructionExample(id="long", dataset="x", messages=[{"role": "user", "content": "word " * 50},
                                                                {"role": "assistant", "content": "ok"}])
    short = InstructionExample(id="short", dataset="x", prompt="2+2=", completion="4")
    ds = EncodedDataset(tiny_tokenizer, [long, short], "tulu", max_length=16)
    assert len(ds) == 1 and ds.empty == ["long"]
    batch = pad_collate(tiny_tokenizer.pad_token_id)([ds[0], {"input_ids": [1], "labels": [1], "attention_mask": [1]}])
    assert batch["input_ids"].shape == (2, len(ds[0]["input_ids"])) and batch["labels"][1, 1:].eq(IGNORE).all()
    assert batch["attention_mask"][1].sum() == 1
    with pytest.raises(ValueError, match="no example has a trained token"):
        EncodedDataset(tiny_tokenizer, [long], "tulu", max_length=16)
