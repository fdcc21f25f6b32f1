"""Datasets: every format TRL users bring, and every bad row named by file, row and field."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugalign.cli import main
from frugalign.data import (
    Demonstration,
    LabelledCompletion,
    PreferenceExample,
    demonstrations,
    labelled_completions,
    load_rows,
    preference_examples,
    tokenize_demonstrations,
    tokenize_labelled,
    tokenize_preferences,
    unlabelled_pairs,
)
from frugalign.errors import DataError, UserError
from tests.conftest import char_tokenizer

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture
def chat_tokenizer():
    tok = char_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_standard_explicit_and_weights(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "weight": 2},
                                             {"prompt": "q", "chosen": "c", "rejected": "d"}])
    ex = preference_examples(load_rows(src), src)
    assert ex == [PreferenceExample("q", "a", "b", 2.0), PreferenceExample("q", "c", "d", 1.0)]


def test_implicit_prompt_is_cut_at_a_word_boundary():
    rows = [{"chosen": "Question: sum? Answer: four", "rejected": "Question: sum? Answer: five"}]
    (ex,) = preference_examples(rows, "mem")
    assert (ex.prompt, ex.chosen, ex.rejected) == ("Question: sum? Answer: ", "four", "five")
    rows = [{"chosen": "Question: say foo", "rejected": "Question: say fob"}]  # shared partial word "fo"
    (ex,) = preference_examples(rows, "mem")
    assert (ex.prompt, ex.chosen, ex.rejected) == ("Question: say ", "foo", "fob")


def test_conversational_explicit_and_implicit_apply_the_chat_template(chat_tokenizer):
    user = [{"role": "user", "content": "hi"}]
    good, bad = [{"role": "assistant", "content": "hello"}], [{"role": "assistant", "content": "go"}]
    explicit = preference_examples([{"prompt": user, "chosen": good, "rejected": bad}], "mem", chat_tokenizer)
    implicit = preference_examples([{"chosen": user + good, "rejected": user + bad}], "mem", chat_tokenizer)
    assert explicit == implicit
    (ex,) = explicit
    assert ex.prompt == "<user>hi<eos><assistant>" and ex.chosen == "hello<eos>" and ex.templated


def test_conversational_without_chat_template_is_refused():
    with pytest.raises(UserError, match="chat template"):
        preference_examples([{"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant",
                              "content": "y"}], "rejected": [{"role": "assistant", "content": "z"}]}], "f.jsonl")


@pytest.mark.parametrize("row,field,message", [
    ({"prompt": "q", "chosen": "a"}, "rejected", "missing column"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen", "empty string"),
    ({"prompt": "q", "chosen": "   ", "rejected": "b"}, "chosen", "empty string"),
    ({"prompt": "q", "chosen": None, "rejected": "b"}, "chosen", "null"),
    ({"prompt": 5, "chosen": "a", "rejected": "b"}, "prompt", "got int"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "weight": -1}, "weight", ">= 0"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "weight": math.nan}, "weight", "finite"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "weight": "1"}, "weight", "expected a number"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "weight": True}, "weight", "expected a number"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "rejected", "identical"),
    ({"chosen": "abc", "rejected": "xyz"}, "prompt", "share no prefix"),
    ({"prompt": [{"role": "user"}], "chosen": [], "rejected": []}, "chosen", "non-empty list"),
])
def test_bad_preference_rows_name_file_row_and_field(row, field, message, chat_tokenizer):
    rows = [{"prompt": "ok", "chosen": "y", "rejected": "n"}, row]
    with pytest.raises(DataError) as err:
        preference_examples(rows, "data.jsonl", chat_tokenizer)
    assert str(err.value).startswith(f"data.jsonl: row 2: field '{field}':")
    assert message in str(err.value)


def test_bad_message_role_and_content(chat_tokenizer):
    bad_role = {"prompt": [{"role": "robot", "content": "x"}], "chosen": [{"role": "assistant", "content": "y"}],
                "rejected": [{"role": "assistant", "content": "z"}]}
    with pytest.raises(DataError, match="row 1: field 'prompt': message 1 has unknown role 'robot'"):
        preference_examples([bad_role], "f", chat_tokenizer)


def test_malformed_and_non_object_json_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=r"x.jsonl: row 3: malformed JSON"):
        load_rows(str(path))
    path.write_text('{"prompt": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"row 2: expected a JSON object, got list"):
        load_rows(str(path))


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_rows(str(tmp_path / "empty.jsonl"))


def test_json_array_csv_parquet_and_saved_dataset_read_the_same(tmp_path):
    import datasets

    rows = [{"prompt": "q1", "chosen": "a", "rejected": "b"}, {"prompt": "q2", "chosen": "c", "rejected": "d"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    ds = datasets.Dataset.from_list(rows)
    ds.to_csv(str(tmp_path / "a.csv"), index=False)
    ds.to_parquet(str(tmp_path / "a.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    for source in ("a.json", "a.csv", "a.parquet", "saved"):
        assert load_rows(str(tmp_path / source)) == rows, source
    with pytest.raises(UserError, match="no split 'test'"):
        load_rows(str(tmp_path / "saved"), split="test")


def test_hub_name_offline_gives_a_clear_error():
    with pytest.raises(UserError, match="could not be loaded.*offline"):
        load_rows("someone/no-such-dataset-frugalign")


def test_demonstrations_from_messages_and_prompt_completion(chat_tokenizer):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    (a,) = demonstrations([{"messages": msgs}], "d", chat_tokenizer)
    assert a == Demonstration("<user>hi<eos><assistant>", "yo<eos>", True)
    (b,) = demonstrations([{"prompt": "p", "completion": "c"}], "d")
    assert b == Demonstration("p", "c")
    with pytest.raises(DataError, match="row 1: field 'messages': the last message must be the assistant's"):
        demonstrations([{"messages": msgs[:1]}], "d", chat_tokenizer)
    with pytest.raises(DataError, match="row 1: field 'completion': missing column"):
        demonstrations([{"prompt": "p"}], "d")


def test_labelled_completions_standard_conversational_and_split_pairs(chat_tokenizer):
    rows = [{"prompt": "p", "completion": "c", "label": True}, {"prompt": "q", "completion": "d", "label": False}]
    assert labelled_completions(rows, "k", chat_template="off") == [LabelledCompletion("p", "c", True),
                                                                    LabelledCompletion("q", "d", False)]
    user, bot = [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "yo"}]
    (conv,) = labelled_completions([{"prompt": user, "completion": bot, "label": False}], "k", chat_tokenizer)
    assert conv == LabelledCompletion("<user>hi<eos><assistant>", "yo<eos>", False, True)
    # a preference pair gives its chosen completion as desirable, its rejected one as undesirable
    split = labelled_completions([{"prompt": "p", "chosen": "good", "rejected": "bad"}], "k", chat_template="off")
    assert split == [LabelledCompletion("p", "good", True), LabelledCompletion("p", "bad", False)]
    tokenized, _ = tokenize_labelled(split, char_tokenizer(), 16, 8, "k")
    assert [r["desirable"] for r in tokenized] == [True, False]
    with pytest.raises(DataError, match="k: row 2: field 'label': expected true or false, got 'false'"):
        labelled_completions([rows[0], {"prompt": "p", "completion": "c", "label": "false"}], "k")


def test_unlabelled_pairs_hide_labels_with_both_orders():
    rows = [{"prompt": f"q{i}", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(40)]
    pairs, labels = unlabelled_pairs(rows, "p", seed=1)
    assert set(labels) == {1, -1}
    for pair, label in zip(pairs, labels):
        assert (pair.response_a.startswith("good")) == (label == 1)
    unl, none = unlabelled_pairs([{"prompt": "q", "response_a": "x", "response_b": "y"}], "u")
    assert none is None and unl[0].response_b == "y"
    with pytest.raises(DataError, match="row 1: field 'response_b': missing column"):
        unlabelled_pairs([{"prompt": "q", "response_a": "x"}], "u")


def test_truncation_keeps_prompt_end_and_response_start(tokenizer):
    ex = [PreferenceExample("abcdefgh", "12345", "xy")]
    rows, report = tokenize_preferences(ex, tokenizer, 3, 4, "t")
    (row,) = rows
    assert tokenizer.decode(row["prompt_ids"]) == "fgh"
    assert tokenizer.decode(row["chosen_ids"]) == "1234"  # cut: loses its EOS
    assert row["rejected_ids"][-1] == tokenizer.eos_token_id and len(row["rejected_ids"]) == 3
    assert (report.prompts_truncated, report.responses_truncated, report.dropped) == (1, 1, 0)
    rows, report = tokenize_preferences(ex + [PreferenceExample("a", "b", "c")], tokenizer, 3, 4, "t", "drop")
    assert len(rows) == 1 and report.dropped == 1 and rows[0]["index"] == 1
    with pytest.raises(DataError, match="t: row 1: field 'prompt': 8 tokens, over max_prompt_length=3"):
        tokenize_preferences(ex, tokenizer, 3, 4, "t", "error")


def test_templated_rows_get_no_extra_special_tokens(chat_tokenizer):
    (demo,) = demonstrations([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
                             "d", chat_tokenizer)
    rows, _ = tokenize_demonstrations([demo], chat_tokenizer, 64, 64, "d")
    assert chat_tokenizer.decode(rows[0]["completion_ids"]) == "yo<eos>"  # the template's EOS, not a second one


@settings(max_examples=40, deadline=None)
@given(prompt=st.text("abc", min_size=1, max_size=30), response=st.text("xyz", min_size=1, max_size=30),
       max_prompt=st.integers(1, 12), max_response=st.integers(1, 12))
def test_truncation_never_exceeds_the_limits(prompt, response, max_prompt, max_response):
    tok = char_tokenizer()
    rows, _ = tokenize_preferences([PreferenceExample(prompt, response, response + "z")], tok, max_prompt,
                                   max_response, "h")
    assert len(rows[0]["prompt_ids"]) <= max_prompt
    assert len(rows[0]["chosen_ids"]) <= max_response and len(rows[0]["rejected_ids"]) <= max_response


ROW = {"prompt": "a", "chosen": "b", "rejected": "c"}


@pytest.mark.parametrize("name,content,where", [
    ("u.jsonl", b'{"prompt": "a"}\n{"prompt": "\xff"}\n', "u.jsonl: row 2: not valid UTF-8: byte 0xff at column 13"),
    ("u.json", b'[{"prompt": "a"},\n {"prompt": "\xff"}]', "u.json: not valid UTF-8: byte 0xff at line 2, column 14"),
    ("u.csv", b"prompt,chosen,rejected\na,b\xff,c\n", "u.csv: not valid UTF-8: byte 0xff at line 2, column 4"),
])
def test_invalid_utf8_is_named_by_row_or_line(tmp_path, name, content, where):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as e:
        load_rows(str(tmp_path / name))
    assert str(e.value) == f"{tmp_path / where} (save the file as UTF-8)"


@pytest.mark.parametrize("field,value", [("weight", "9" * 5000), ("margin", "9" * 5000), ("weight", "9" * 400),
                                         ("margin", "-" + "9" * 400)])
def test_huge_numbers_are_refused_by_field(tmp_path, field, value):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW)[:-1] + f', "{field}": {value}}}\n')
    with pytest.raises(DataError, match=f"big.jsonl: row 2: field '{field}': .*finite number"):
        preference_examples(load_rows(str(path)), str(path))


@pytest.mark.parametrize("name,text", [("deep.json", "[" * 100_000 + "]" * 100_000),
                                       ("deep.jsonl", '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")])
def test_deeply_nested_json_is_refused(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match="nested too deeply"):
        load_rows(str(tmp_path / name))


@pytest.mark.parametrize("cell,message", [("nan", "row 2: field 'weight': must be a finite number >= 0, got nan"),
                                          ("oops", "row 2: field 'weight': expected a number, got 'oops'")])
def test_csv_weight_nan_is_refused_and_the_bad_row_is_the_one_named(tmp_path, cell, message):
    path = tmp_path / "w.csv"
    path.write_text(f"prompt,chosen,rejected,weight\nNA,b,c,1\nd,e,f,{cell}\ng,h,i,\n")
    with pytest.raises(DataError) as e:
        preference_examples(load_rows(str(path)), str(path))
    assert str(e.value) == f"{path}: {message}"
    path.write_text("prompt,chosen,rejected,weight\nNA,b,c,0.5\ng,h,i,\n")
    # an empty cell is a missing weight (1.0); "NA" is a prompt like any other
    assert [(x.prompt, x.weight) for x in preference_examples(load_rows(str(path)), str(path))] == [("NA", 0.5),
                                                                                                    ("g", 1.0)]


@pytest.mark.parametrize("command", [["sft"], ["adpo"], ["dpo"]])
def test_invalid_utf8_dataset_is_one_line_in_training_commands(tmp_path, tiny_model_dir, capsys, command):
    (tmp_path / "u.jsonl").write_bytes(b'{"prompt": "\xff", "completion": "b"}\n')
    code = main([*command, "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "u.jsonl"), "--output-dir",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "u.jsonl: row 1: not valid UTF-8" in err and "Traceback" not in err


def test_invalid_utf8_answers_in_import_study_is_one_line(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_bytes(b'{"instruction": "p", "output": "\xff"}\n')
    (tmp_path / "b.jsonl").write_text('{"instruction": "p", "output": "b"}\n')
    code = main(["annotate", "import-study", "--db", str(tmp_path / "s.sqlite"), "--model-a", str(tmp_path / "a.jsonl"),
                 "--model-b", str(tmp_path / "b.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "a.jsonl: row 1: not valid UTF-8" in err and "Traceback" not in err


def bpe_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's kind, as SmolLM2's) trained here on a few words: a space merges
    with the word after it ('Ġyes'), which is where tokenizing prompt and response apart goes wrong."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["The answer is yes", "the answer is no", "Q: is it yes?\nA: yes"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.mark.parametrize("prompt,response", [
    ("The answer is ", "yes"),  # the prompt ends in a space: ' yes' is one token
    ("The answer is", " yes"),  # the response starts with it
    ("Q: is it yes?\n", "A: yes"),  # a newline between
    ("The answer is ", "yes<eos>"),  # the response already ends with the EOS text
])
def test_prompt_and_response_split_where_the_joined_text_splits(prompt, response):
    tok = bpe_tokenizer()
    rows, _ = tokenize_preferences([PreferenceExample(prompt, response, "no")], tok, 64, 64, "t")
    (row,) = rows
    joined = tok(prompt + response.removesuffix("<eos>"), add_special_tokens=True)["input_ids"]
    # the model is trained on the tokens of the text it will see: prompt + response, then one EOS
    assert row["prompt_ids"] + row["chosen_ids"] == joined + [tok.eos_token_id]
    assert row["chosen_ids"].count(tok.eos_token_id) == 1
    if prompt == "The answer is ":
        assert tok.convert_ids_to_tokens(row["chosen_ids"][:1]) == ["Ġyes"]
        assert tok.convert_ids_to_tokens(row["prompt_ids"][-1:]) == ["Ġis"]  # the space went to the response


def test_a_templated_pair_is_the_rendered_conversation_split_at_the_shared_prompt(chat_tokenizer):
    user = [{"role": "user", "content": "hi"}]
    (ex,) = preference_examples([{"prompt": user, "chosen": [{"role": "assistant", "content": "hello"}],
                                  "rejected": [{"role": "assistant", "content": "go"}]}], "mem", chat_tokenizer)
    (row,) = tokenize_preferences([ex], chat_tokenizer, 64, 64, "mem")[0]
    for key, reply in (("chosen_ids", "hello"), ("rejected_ids", "go")):
        full = chat_tokenizer.apply_chat_template(user + [{"role": "assistant", "content": reply}], tokenize=False)
        assert row["prompt_ids"] + row[key] == chat_tokenizer(full, add_special_tokens=False)["input_ids"]


STRING_ROW = {"prompt": "hi", "chosen": "hello", "rejected": "go"}
MESSAGE_ROW = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
               "rejected": [{"role": "assistant", "content": "go"}]}


def test_plain_strings_get_the_chat_template_by_default_when_the_tokenizer_has_one(chat_tokenizer):
    (plain,) = preference_examples([STRING_ROW], "p", chat_tokenizer)
    assert (plain.prompt, plain.chosen, plain.chat) == ("hi", "hello", True)  # kept plain: what people see
    (messages,) = preference_examples([MESSAGE_ROW], "m", chat_tokenizer)
    as_strings = tokenize_preferences([plain], chat_tokenizer, 64, 64, "p")[0]
    as_messages = tokenize_preferences([messages], chat_tokenizer, 64, 64, "m")[0]
    assert as_strings == as_messages  # trained in the format the model is prompted in
    assert chat_tokenizer.decode(as_strings[0]["chosen_ids"]) == "hello<eos>"  # the template's end of turn, once
    assert len(as_strings[0]["prompt_ids"]) > len("hi") + 10  # the user turn and the generation prompt around it


def test_the_chat_template_rule_off_on_and_a_prompt_rendered_already(chat_tokenizer):
    (off,) = preference_examples([STRING_ROW], "p", chat_tokenizer, chat_template="off")
    rows, _ = tokenize_preferences([off], chat_tokenizer, 64, 64, "p")
    assert not off.chat and chat_tokenizer.decode(rows[0]["prompt_ids"] + rows[0]["chosen_ids"]) == "hihello<eos>"
    with pytest.raises(UserError, match="p: --chat-template on, but the tokenizer has no chat template"):
        preference_examples([STRING_ROW], "p", char_tokenizer(), chat_template="on")
    (plain,) = preference_examples([STRING_ROW], "p", char_tokenizer())  # auto, no template: plain text
    assert not plain.chat
    rendered = chat_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                  add_generation_prompt=True)
    (again,) = preference_examples([{**STRING_ROW, "prompt": rendered}], "p", chat_tokenizer)
    assert not again.chat  # not rendered twice
    (demo,) = demonstrations([{"prompt": "hi", "completion": "yo"}], "d", chat_tokenizer)
    assert demo.chat and demo.prompt == "hi"


def test_unlabelled_pairs_keep_plain_text_for_the_ledger_and_train_on_the_rendering(chat_tokenizer):
    from frugalign.active.ledger import pair_id
    from frugalign.data import tokenize_unlabelled

    (pair,), _ = unlabelled_pairs([{"prompt": "hi", "response_a": "hello", "response_b": "go"}], "u", chat_tokenizer)
    assert pair.chat and pair_id(pair.prompt, pair.response_a, pair.response_b) == pair_id("hi", "hello", "go")
    (row,), _ = tokenize_unlabelled([pair], chat_tokenizer, 64, 64, "u")
    (messages,) = preference_examples([MESSAGE_ROW], "m", chat_tokenizer)
    (reference,), _ = tokenize_preferences([messages], chat_tokenizer, 64, 64, "m")
    assert (row["prompt_ids"], row["a_ids"], row["b_ids"]) == (reference["prompt_ids"], reference["chosen_ids"],
                                                                reference["rejected_ids"])


def test_a_tokenizer_that_appends_eos_itself_still_gives_one_eos():
    from tokenizers.processors import TemplateProcessing

    tok = bpe_tokenizer()
    eos = tok.eos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", eos)])
    assert tok("The answer is")["input_ids"][-1] == eos  # as Llama's with add_eos_token=True
    (row,), _ = tokenize_preferences([PreferenceExample("The answer is ", "yes", "no <eos>\n")], tok, 64, 64, "t")
    for ids in (row["chosen_ids"], row["rejected_ids"]):
        assert ids.count(eos) == 1 and ids[-1] == eos
    assert eos not in row["prompt_ids"]
