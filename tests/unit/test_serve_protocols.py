"""Text protocols -> (prompt, response): chat formats, end markers, OpenRLHF's query/prompt split,
and the operator's prompt -> images map."""

from __future__ import annotations

import json

import pytest

from basereward.errors import DataError
from basereward.serve.protocols import (
    PromptMap,
    split_conversation,
    split_query,
    strip_end_markers,
)
from basereward.serve.schemas import RequestError

CHATML = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n"
          "<|im_start|>assistant\n{r}<|im_end|>\n")
LLAMA3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{p}<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n{r}<|eot_id|>")
GEMMA = "<bos><start_of_turn>user\n{p}<end_of_turn>\n<start_of_turn>model\n{r}<end_of_turn>\n"


@pytest.mark.parametrize("template", [CHATML, LLAMA3, GEMMA])
def test_conversation_split_recovers_prompt_and_response(template):
    s = split_conversation(template.format(p="What colour is it?", r="Red.\nSurely."))
    assert (s.prompt, s.response, s.placeholders) == ("What colour is it?", "Red.\nSurely.", 0)


def test_last_user_turn_is_the_prompt_and_image_placeholders_are_counted():
    text = ("<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nold<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|image_pad|><|vision_end|><image>Compare them.<|im_end|>\n<|im_start|>assistant\nSame")
    s = split_conversation(text)
    assert (s.prompt, s.response, s.placeholders) == ("Compare them.", "Same", 2)


def test_unknown_format_is_a_422_that_says_what_to_do():
    with pytest.raises(RequestError) as e:
        split_conversation("User: hi\nAssistant: hello")
    assert e.value.status == 422 and "/v1/score" in e.value.detail


def test_end_markers_and_the_newlines_after_them_are_stripped_but_nothing_else():
    assert strip_end_markers("ok<|im_end|>\n<|endoftext|><|endoftext|>") == "ok"
    assert strip_end_markers("ok \n<|eot_id|>") == "ok \n"
    assert strip_end_markers("line\n") == "line\n"
    assert strip_end_markers("</s>") == ""


def test_openrlhf_query_minus_prompt_is_the_response():
    prompt = "<|im_start|>user\nHow many cats?<|im_end|>\n<|im_start|>assistant\n"
    s = split_query(prompt + "Three.<|im_end|>", prompt)
    assert (s.prompt, s.response) == ("How many cats?", "Three.")
    # Left padding of a batch-decoded sequence is allowed, other text before the prompt is not.
    assert split_query("<|endoftext|><|endoftext|>" + prompt + "Two.", prompt).response == "Two."
    with pytest.raises(RequestError, match="does not start with its prompt"):
        split_query("junk " + prompt + "Two.", prompt)
    with pytest.raises(RequestError, match="does not contain its prompt"):
        split_query("something else", prompt)
    # A plain input template (no chat format): the prompt text is used as sent.
    assert split_query("Q: 2+2?\nA: 4", "Q: 2+2?\nA: ").prompt == "Q: 2+2?\nA:"
    # Without prompts the query is split as a conversation.
    assert split_query(CHATML.format(p="x", r="y"), None).response == "y"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompt_map_exact_contained_ambiguous_and_missing(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    path = _write(tmp_path / "prompts.jsonl", [
        {"prompt": "What colour is the square?", "images": ["img/a.png"], "chosen": "extra fields are ignored"},
        {"prompt": "What colour is the square? Answer briefly.", "images": ["img/b.png"]},
        {"prompt": "Describe the image.", "images": ["img/a.png"]},
        {"prompt": "Describe the image.", "images": ["img/b.png"]},
        {"prompt": "What colour is the square?", "images": ["img/a.png"]},  # same again: fine
        {"prompt": "A text prompt", "images": []},
    ])
    m = PromptMap.load(path, root=str(tmp_path))
    a, b = str((tmp_path / "img" / "a.png").resolve()), str((tmp_path / "img" / "b.png").resolve())
    assert (len(m), m.ambiguous) == (4, 1)
    assert m.lookup("  What colour is the square? ") == ("What colour is the square?", (a,))
    # Contained: the longest listed prompt inside the text wins.
    assert m.lookup("User: What colour is the square? Answer briefly.\nAssistant:") == \
        ("What colour is the square? Answer briefly.", (b,))
    assert m.lookup("A text prompt") == ("A text prompt", ())
    assert m.lookup("never listed") is None
    with pytest.raises(RequestError, match="ambiguous"):
        m.lookup("Describe the image.")


def test_prompt_map_images_outside_the_root_or_missing_fail_at_load(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataError, match=r"prompts.jsonl:1: ../outside.png: .*outside the image root"):
        PromptMap.load(_write(root / "prompts.jsonl", [{"prompt": "p", "images": ["../outside.png"]}]), root=str(root))
    with pytest.raises(DataError, match=r"prompts.jsonl:1: nope.png: image not found"):
        PromptMap.load(_write(root / "prompts.jsonl", [{"prompt": "p", "images": ["nope.png"]}]))
    with pytest.raises(DataError, match=r"prompts.jsonl:1: field 'prompt' must be a non-empty string"):
        PromptMap.load(_write(root / "prompts.jsonl", [{"prompt": 3, "images": []}]))
