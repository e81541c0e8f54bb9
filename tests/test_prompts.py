import json

import datasets
import pytest

from envs.prompts import PromptOrder, encode_prompts, load_prompt_rows


def test_sources_list_of_str_dicts_jsonl_dataset_and_builtin(tmp_path):
    assert load_prompt_rows(["a", "b"]) == [{"prompt": "a"}, {"prompt": "b"}]
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
    assert load_prompt_rows(rows) == rows
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_prompt_rows(path) == rows
    assert load_prompt_rows(str(path)) == rows
    assert load_prompt_rows(datasets.Dataset.from_list(rows)) == rows
    assert len(load_prompt_rows("arithmetic")) == 9500
    assert len(load_prompt_rows("arithmetic-eval")) == 500
    assert load_prompt_rows([{"q": "x"}], prompt_key="q") == [{"q": "x"}]


@pytest.mark.parametrize(
    "source, match",
    [
        ([], "empty"),
        (datasets.Dataset.from_list([]), "empty"),
        ("no-such-source", "neither a built-in name"),
        ([{"question": "x"}], "no 'prompt' column"),
        ([{"prompt": ""}], "non-empty"),
        (42, "unsupported prompt source"),
    ],
)
def test_bad_sources_are_named(source, match):
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        load_prompt_rows(source)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{not json}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_prompt_rows(path)


def test_encode_plain_chat_and_length_limits(tiny_tokenizer):
    rows = [{"prompt": "1+2=", "answer": "3"}, {"prompt": [{"role": "user", "content": "hi"}]}]
    recs = encode_prompts(rows, tiny_tokenizer)
    assert recs[0].input_ids == tuple(tiny_tokenizer("1+2=")["input_ids"])
    assert recs[0].columns == {"answer": "3"}
    chat_text = tiny_tokenizer.decode(recs[1].input_ids)
    assert chat_text == "<s>user: hi\nassistant: "
    forced = encode_prompts([{"prompt": "hi"}], tiny_tokenizer, apply_chat_template=True)
    assert forced[0].input_ids == recs[1].input_ids
    with pytest.raises(ValueError, match=r"prompt 0 is 5 tokens, more than max_prompt_tokens=3"):
        encode_prompts([{"prompt": "1+2="}], tiny_tokenizer, max_prompt_tokens=3)
    cut = encode_prompts([{"prompt": "1+2="}], tiny_tokenizer, max_prompt_tokens=3, truncate=True)
    assert tiny_tokenizer.decode(cut[0].input_ids) == "+2="  # keeps the end of the prompt


def test_prompt_order_covers_each_epoch_once_and_shards_are_disjoint():
    order = PromptOrder(10, seed=3)
    first = order.take(10)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    second = order.take(10)
    assert sorted(second) == list(range(10)) and second != first
    assert PromptOrder(10, seed=3).take(20) == first + second
    shards = [PromptOrder(10, seed=3, shard_index=i, num_shards=2).take(5) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    assert PromptOrder(5, shuffle=False).take(7) == [0, 1, 2, 3, 4, 0, 1]


def test_prompt_order_state_round_trip():
    a = PromptOrder(7, seed=1)
    a.take(9)
    b = PromptOrder(7, seed=99)
    b.set_state(a.get_state())
    assert b.take(12) == a.take(12)
    with pytest.raises(ValueError, match="shard_index"):
        PromptOrder(7, shard_index=2, num_shards=2)


@pytest.mark.parametrize(
    "prompt, match",
    [
        (["1+1="], r"prompt row 1: 'prompt' is a list, read as a chat, but message 0 is a str \('1\+1='\)"),
        ([{"role": "user", "text": "hi"}],
         r"prompt row 1: .*message 0 has no 'content' \(its keys: \['role', 'text'\]\)"),
        ([{"content": "hi"}], r"prompt row 1: .*message 0 has no 'role'"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": 3}],
         r"prompt row 1: .*message 1 has 3 \(int\) as its 'content', expected a str"),
        ({"role": "user", "content": "hi"}, r"prompt row 1: 'prompt' must be a non-empty string or chat"),
    ],
)
def test_malformed_chats_are_refused_with_the_row(tiny_tokenizer, prompt, match):
    rows = [{"prompt": "ok"}, {"prompt": prompt}]
    with pytest.raises(ValueError, match=match):
        load_prompt_rows(rows)
    with pytest.raises(ValueError, match=match):  # rows that bypass load_prompt_rows are checked too
        encode_prompts(rows, tiny_tokenizer)


def test_unencodable_characters_warn_once_naming_row_and_character(tiny_tokenizer, recwarn):
    rows = [{"prompt": "1+1="}, {"prompt": "literal <unk> is fine"}, {"prompt": "2+2=é"}, {"prompt": "ü"}]
    encode_prompts(rows, tiny_tokenizer)
    msgs = [str(w.message) for w in recwarn.list if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1, msgs
    assert "prompt row 2" in msgs[0] and "'é'" in msgs[0] and "<unk>" in msgs[0] and "1 later prompt row" in msgs[0]
    recwarn.clear()
    encode_prompts([{"prompt": "1+1="}, {"prompt": "a <unk> b"}], tiny_tokenizer)
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)]
