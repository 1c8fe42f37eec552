"""The reward server on a tiny random Qwen2.5-VL: its rewards equal the in-process Scorer's on every
endpoint, and OpenRLHF's `/get_reward` and verl's `/classify` calls, built exactly as those
frameworks build them, get the reward of the right (prompt, image, response)."""

from __future__ import annotations

import base64
import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from helpers.tiny_models import (
    QWEN_VL_CHAT_TEMPLATE,
    solid_image,
    tiny_qwen25vl_dir,
    tiny_reward_model_dir,
    tiny_tokenizer,
)

from basereward.data.schema import Group
from basereward.load import load_scorer
from basereward.serve import (
    ImagePolicy,
    PromptMap,
    ServeOptions,
    create_app,
    running_server,
)
from basereward.serve.run import model_info

P_SQUARE = "What colour is the square?"
P_TEXT = "Tell me a joke about cats."


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    model_dir = tiny_reward_model_dir(tmp / "rm", tiny_qwen25vl_dir(tmp), seed=3)
    root = tmp / "images"
    root.mkdir()
    solid_image(56, 56, 1).save(root / "square.png")
    solid_image(70, 42, 2).save(root / "other.png")
    (root / "prompts.jsonl").write_text(json.dumps({"prompt": P_SQUARE, "images": ["square.png"]}) + "\n")
    scorer = load_scorer(model_dir, batch_size=32)
    options = ServeOptions(model_name="rm", model_info=model_info(str(model_dir)), images=ImagePolicy(root=str(root)),
                           prompt_map=PromptMap.load(str(root / "prompts.jsonl"), root=str(root)),
                           max_batch=16, max_wait_ms=20)
    with running_server(create_app(scorer, options)) as url:
        yield {"url": url, "scorer": scorer, "root": root, "app_options": options}


def expected(ws, prompt, images, responses):
    paths = tuple(str(ws["root"] / name) for name in images)
    return ws["scorer"].score_groups([Group(prompt=prompt, images=paths, responses=tuple(responses))])[0]


def inline(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def post(ws, path, body, **kw):
    return httpx.post(ws["url"] + path, json=body, timeout=60, **kw)


def test_score_equals_in_process_by_path_inline_and_text_only(ws):
    items = [
        {"prompt": P_SQUARE, "images": ["square.png"], "response": "It is red."},
        {"prompt": P_SQUARE, "images": [inline(ws["root"] / "square.png")], "response": "Blue, I think."},
        {"prompt": P_TEXT, "response": "Why did the cat sit on the computer?"},
        {"prompt": P_SQUARE, "images": ["other.png", "square.png"], "response": "Two pictures."},
    ]
    r = post(ws, "/v1/score", {"items": items})
    assert r.status_code == 200, r.text
    got = r.json()
    want = [*expected(ws, P_SQUARE, ["square.png"], ["It is red.", "Blue, I think."]),
            *expected(ws, P_TEXT, [], ["Why did the cat sit on the computer?"]),
            *expected(ws, P_SQUARE, ["other.png", "square.png"], ["Two pictures."])]
    assert got["model"] == "rm"
    assert got["rewards"] == pytest.approx(want, abs=1e-5)
    assert len(set(round(x, 6) for x in want)) == 4  # a random head: the four rewards differ


def test_rank_and_compare(ws):
    responses = ["red", "It is a red square.", "green", "I cannot see images."]
    want = expected(ws, P_SQUARE, ["square.png"], responses)
    r = post(ws, "/v1/rank", {"prompt": P_SQUARE, "images": ["square.png"], "responses": responses}).json()
    assert r["rewards"] == pytest.approx(want, abs=1e-5)
    assert r["order"] == sorted(range(4), key=lambda i: -want[i])
    c = post(ws, "/v1/compare", {"prompt": P_SQUARE, "images": ["square.png"],
                                 "response_a": responses[0], "response_b": responses[1]}).json()
    margin = want[0] - want[1]
    assert c["rewards"] == pytest.approx(want[:2], abs=1e-5)
    assert c["margin"] == pytest.approx(margin, abs=1e-5)
    assert c["probability"] == pytest.approx(1 / (1 + math.exp(-margin)), abs=1e-5)
    assert c["better"] == ("a" if margin >= 0 else "b")


def test_concurrent_single_sample_requests_each_get_their_own_reward(ws):
    responses = [f"answer number {i}" for i in range(24)]
    want = expected(ws, P_SQUARE, ["square.png"], responses)
    before = httpx.get(ws["url"] + "/health").json()

    def one(i):
        return post(ws, "/v1/score", {"items": [{"prompt": P_SQUARE, "images": ["square.png"],
                                                 "response": responses[i]}]}).json()["rewards"][0]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(24)))
    assert got == pytest.approx(want, abs=1e-5)
    after = httpx.get(ws["url"] + "/health").json()
    assert after["sequences"] - before["sequences"] == 24
    assert after["largest_batch"] <= 16


def openrlhf_query(prompt_text: str, response: str) -> tuple[str, str]:
    """(query, prompt) as OpenRLHF's single-turn executor builds them: the prompt rendered by the
    policy's chat template, the response's tokens appended, decoded without skipping special tokens."""
    tok = tiny_tokenizer()
    tok.chat_template = QWEN_VL_CHAT_TEMPLATE
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text}]}]
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids += tok(response + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return tok.decode(ids, skip_special_tokens=False), prompt


def test_openrlhf_get_reward_finds_the_image_through_the_prompt_map(ws):
    query, prompt = openrlhf_query(P_SQUARE, "The square is red.")
    assert "<|image_pad|>" in prompt and query.endswith("<|im_end|>")
    # One sample per request, exactly the payload OpenRLHF posts.
    r = post(ws, "/get_reward", {"query": [query], "prompts": [prompt], "labels": ["red"]})
    assert r.status_code == 200, r.text
    info = r.json()
    want = expected(ws, P_SQUARE, ["square.png"], ["The square is red."])
    # What OpenRLHF reads: rewards, scores (or rewards), extra_logs values as tensors.
    assert info["rewards"] == pytest.approx(want, abs=1e-5)
    assert (info.get("scores") or info.get("rewards")) == info["rewards"]
    assert all(torch.tensor([v]).numel() == 1 for v in info["extra_logs"].values())


def test_openrlhf_prompt_with_an_image_placeholder_but_no_image_is_refused(ws):
    query, prompt = openrlhf_query("A prompt nobody listed", "text")
    r = post(ws, "/get_reward", {"query": [query], "prompts": [prompt], "labels": [""]})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("query[0]: the prompt shows 1 image placeholder(s) but no image was found")
    # The same request with the image inline (our extension) is scored.
    r = post(ws, "/get_reward", {"query": [query], "prompts": [prompt], "images": [["other.png"]]})
    want = expected(ws, "A prompt nobody listed", ["other.png"], ["text"])
    assert r.json()["rewards"] == pytest.approx(want, abs=1e-5)


def verl_input(prompt_content: str, response: str) -> str:
    """The text verl's reward loop posts: the RM tokenizer's chat template over raw_prompt plus the
    decoded response, add_generation_prompt=False, tokenize=False, BOS removed."""
    tok = tiny_tokenizer()
    tok.chat_template = QWEN_VL_CHAT_TEMPLATE
    chat = [{"role": "user", "content": prompt_content}, {"role": "assistant", "content": response}]
    text = tok.apply_chat_template(chat, add_generation_prompt=False, tokenize=False)
    return text[len(tok.bos_token):] if tok.bos_token and text.startswith(tok.bos_token) else text


@pytest.mark.parametrize("flag", ["use_activation", "activation"])
def test_verl_classify_reads_the_raw_reward(ws, flag):
    text = verl_input("<image>" + P_SQUARE, "Red, clearly.")
    output = post(ws, "/classify", {"model": "/models/rm", "input": text, flag: False}).json()
    rm_score = output["data"][-1]["probs"][-1]  # what verl reads
    assert rm_score == pytest.approx(expected(ws, P_SQUARE, ["square.png"], ["Red, clearly."])[0], abs=1e-5)
    assert output["object"] == "list" and output["model"] == "/models/rm" and output["id"].startswith("classify-")
    assert output["data"][0]["num_classes"] == 1 and output["data"][0]["index"] == 0


def test_classify_default_activation_is_sigmoid_and_list_inputs_keep_order(ws):
    texts = [verl_input(P_TEXT, "Meow."), verl_input(P_TEXT, "No.")]
    want = expected(ws, P_TEXT, [], ["Meow.", "No."])
    data = post(ws, "/classify", {"input": texts}).json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert [d["probs"][0] for d in data] == pytest.approx([1 / (1 + math.exp(-w)) for w in want], abs=1e-6)


def test_health_and_model_info(ws):
    health = httpx.get(ws["url"] + "/health").json()
    assert health["status"] == "ok" and health["model"] == "rm" and health["max_batch"] == 16
    info = httpx.get(ws["url"] + "/v1/model").json()
    assert info["name"] == "rm" and info["kind"] == "model"
    assert info["config"]["backbone"]["name"] == "qwen2.5-vl"
    assert "base_weights" in info["provenance"]
    assert httpx.get(ws["url"] + "/openapi.json").json()["paths"].keys() >= {
        "/v1/score", "/v1/rank", "/v1/compare", "/get_reward", "/classify", "/health", "/v1/model"}
