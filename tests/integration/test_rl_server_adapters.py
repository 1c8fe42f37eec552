"""The reward client and the adapters on a real (tiny, random) multimodal reward model, in-process and
through the real reward server on loopback: the same rewards either way, and the image changes them."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest
from helpers.tiny_models import solid_image, tiny_qwen25vl_dir, tiny_reward_model_dir

import basereward.rl.openrlhf as openrlhf_module
import basereward.rl.verl as verl_module
from basereward.data.schema import Group
from basereward.load import load_scorer
from basereward.rl import HttpRewardSource, open_reward_source, sigmoid
from basereward.rl.trl import trl_reward

serve = pytest.importorskip("basereward.serve")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl")
    model_dir = tiny_reward_model_dir(tmp / "rm", tiny_qwen25vl_dir(tmp))
    (tmp / "img").mkdir()
    paths = []
    for i in range(2):
        paths.append(str(tmp / "img" / f"{i}.png"))
        solid_image(56, 56, i).save(paths[-1])
    return tmp, str(model_dir), paths


@contextlib.contextmanager
def servers(model_dir, root, n=2):
    """n replicas of the real server app, each with its own loaded model."""
    from basereward.serve import ServeOptions, create_app, running_server
    from basereward.serve.images import ImagePolicy

    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(running_server(create_app(load_scorer(model_dir), ServeOptions(
            model_name="rm", images=ImagePolicy(root=root), max_batch=4)))) for _ in range(n)]
        yield urls


def test_server_rewards_equal_in_process_rewards_over_two_replicas(ws):
    tmp, model_dir, paths = ws
    groups = [Group("What colour is the square?", ("It is red.", "Blue, I think.", "green"), (paths[0],)),
              Group("Compare them.", ("The first.", "Same."), (paths[0], solid_image(40, 30, 5))),
              Group("Tell me a joke.", ("Why did the cat sit on the computer?",))]
    local = open_reward_source(model_dir).score_groups(groups)
    with servers(model_dir, str(tmp)) as urls:
        with HttpRewardSource(urls, batch_size=2) as http:
            remote = http.score_groups(groups)
            assert http.health()["status"] == "ok"
        with HttpRewardSource(",".join(urls), inline_paths=False) as by_path:  # the server resolves the paths
            remote_paths = by_path.score_groups(groups)
    for a, b, c in zip(local, remote, remote_paths):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5) and a == pytest.approx(c, rel=1e-5, abs=1e-5)


def trl_call(func, prompts, completions, **columns):
    return func(prompts=prompts, completions=completions, completion_ids=None, **columns, trainer_state=None)


def test_trl_adapter_same_rewards_in_process_and_over_http_and_the_image_matters(ws):
    tmp, model_dir, paths = ws
    prompts = [[{"role": "user", "content": "What colour is the square?"}]] * 4
    completions = [[{"role": "assistant", "content": c}] for c in ("red", "It is blue.", "green!", "pink")]
    columns = dict(reward_images=[[paths[0]]] * 4, answer=["red"] * 4)
    local = trl_reward(model_dir)
    in_process = trl_call(local, prompts, completions, **columns)
    scorer = load_scorer(model_dir)
    raw = scorer.score_responses("What colour is the square?", [paths[0]], ["It is blue.", "green!", "pink"])
    assert in_process == pytest.approx([1.0] + [sigmoid(r) for r in raw], abs=1e-6)
    with servers(model_dir, str(tmp), n=1) as urls:
        over_http = trl_call(trl_reward(urls[0]), prompts, completions, **columns)
    assert over_http == pytest.approx(in_process, abs=1e-5)
    other = trl_call(local, prompts, completions, **{**columns, "reward_images": [[paths[1]]] * 4})
    assert min(abs(a - b) for a, b in zip(in_process[1:], other[1:])) > 1e-6  # the RM saw the image


def test_verl_and_openrlhf_files_configured_by_environment_score_with_the_model(ws, monkeypatch):
    tmp, model_dir, paths = ws
    monkeypatch.setenv("BASEREWARD_RM", model_dir)
    monkeypatch.setenv("BASEREWARD_REWARD", "hybrid")
    raw = load_scorer(model_dir).score_responses("What colour is the square?", [paths[0]], ["blue"])[0]

    spec = importlib.util.spec_from_file_location("custom_module", verl_module.__file__)
    verl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verl)
    out = verl.compute_score(data_source="synthetic", solution_str="blue", ground_truth="red",
                             extra_info={"question": "What colour is the square?", "images": [paths[0]]})
    assert out["score"] == pytest.approx(sigmoid(raw), abs=1e-6) and out["images"] == 1.0

    (tmp / "prompts.jsonl").write_text('{"prompt": "What colour is the square?", "images": ["img/0.png"]}\n')
    monkeypatch.setenv("BASEREWARD_PROMPT_IMAGES", str(tmp / "prompts.jsonl"))
    spec = importlib.util.spec_from_file_location("reward_func", openrlhf_module.__file__)
    orl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(orl)
    prompt = "<|im_start|>user\nWhat colour is the square?<|im_end|>\n<|im_start|>assistant\n"
    out = orl.reward_func([prompt + "blue<|im_end|>"], [prompt], ["red"])
    assert out["rewards"].tolist() == pytest.approx([sigmoid(raw)], abs=1e-6)
    assert out["extra_logs"]["images"].tolist() == [1.0]
