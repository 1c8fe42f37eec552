"""The framework adapters called exactly as TRL, verl and OpenRLHF call them (facts from their code):
columns, conversational shapes, images, ground truths, grouping per prompt, and the returned shapes."""

from __future__ import annotations

import importlib.util
import json
import types

import pytest
from PIL import Image

import basereward.rl.openrlhf as openrlhf_module
import basereward.rl.verl as verl_module
from basereward.errors import BaseRewardError
from basereward.rl.rewards import sigmoid
from basereward.rl.trl import trl_reward


class Recording:
    """reward = len(response) + 10 * number of images; records the groups it is given."""

    def __init__(self):
        self.calls = []

    def score_groups(self, groups):
        self.calls.append(list(groups))
        return [[float(len(r) + 10 * len(g.images)) for r in g.responses] for g in groups]


def red(seed=0):
    return Image.new("RGB", (8, 8), (200 + seed, 0, 0))


def trl_call(func, prompts, completions, **columns):
    """What GRPOTrainer._calculate_rewards passes (trl 1.16): every column but `prompt` repeated per
    generation, then trainer_state, log_extra and log_metric."""
    metrics = {}
    out = func(prompts=prompts, completions=completions, completion_ids=[[1, 2]] * len(prompts), **columns,
               trainer_state=types.SimpleNamespace(global_step=7), log_extra=lambda col, vals: None,
               log_metric=lambda name, value: metrics.__setitem__(name, value))
    return out, metrics


def test_trl_conversational_prompts_with_an_image_column_are_scored_per_prompt_group():
    src = Recording()
    func = trl_reward(src)
    assert func.__name__ == "basereward_hybrid"  # TRL logs rewards/<__name__>/mean
    q1 = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    q2 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many?"}]
    prompts = [q1] * 3 + [q2] * 3
    completions = [[{"role": "assistant", "content": c}] for c in ("Red.", "blue", "It is red", "3", "three", "two")]
    # each generation of a row gets its own decoded copy of the image: equal pixels, different objects
    image = [red(), red(), red(), None, None, None]
    rewards, metrics = trl_call(func, prompts, completions, image=image, answer=["red"] * 3 + ["3"] * 3)
    (groups,) = src.calls
    assert [(g.prompt, g.responses, len(g.images)) for g in groups] == [
        ("What colour is it?", ("blue", "It is red"), 1), ("How many?", ("two",), 0)]
    assert rewards == [1.0, sigmoid(14.0), sigmoid(19.0), 1.0, 1.0, sigmoid(3.0)]
    assert metrics == {"basereward/images_to_rm": 1.0, "basereward/samples_to_rm": 3.0,
                       "basereward/rule_match": 0.5, "basereward/rm_reward_mean": pytest.approx(36 / 3)}
    assert func.history[-1]["step"] == 7.0 and func.history[-1]["images_to_rm"] == 1.0


def test_trl_image_columns_in_order_of_preference_and_images_inside_prompts():
    src = Recording()
    func = trl_reward(src, reward="model")
    # `reward_images` (reward model only) wins over `images`; `images` holds a list per row
    rewards, _ = trl_call(func, ["Q", "Q"], ["a", "b"], reward_images=[[red(), red(1)]] * 2, images=[[red()]] * 2)
    assert rewards == [21.0, 21.0] and len(src.calls[-1][0].images) == 2
    rewards, _ = trl_call(func, ["Q", "Q"], ["a", "b"], images=[[red()], [red(1)]])
    assert rewards == [11.0, 11.0] and len(src.calls[-1]) == 2  # different images: two groups
    # TRL's multimodal path puts the image into the prompt's content parts
    prompt = [{"role": "user", "content": [{"type": "image", "image": red()}, {"type": "text", "text": "Q"}]}]
    rewards, _ = trl_call(func, [prompt], ["abc"])
    assert rewards == [13.0]


def test_trl_rule_reward_without_ground_truth_is_none_and_missing_columns_are_one_line_errors():
    func = trl_reward(reward="rule")
    rewards, metrics = trl_call(func, ["Q", "Q"], ["4", "5"], ground_truth=["4", None])
    assert rewards == [1.0, None]  # TRL turns None into "no reward from this function"
    assert metrics == {"basereward/images_to_rm": 0.0, "basereward/samples_to_rm": 0.0, "basereward/rule_match": 1.0}
    with pytest.raises(BaseRewardError, match=r"needs a ground-truth column; the dataset has none of \['ground_truth'"):
        trl_call(trl_reward(Recording()), ["Q"], ["x"], other=[1])
    with pytest.raises(BaseRewardError, match="the dataset has no 'pics' column"):
        trl_call(trl_reward(Recording(), reward="model", image_column="pics"), ["Q"], ["x"])


def verl_load(path, name, reward_kwargs):
    """verl's get_custom_reward_fn: import the file as `custom_module`, merge reward_kwargs into calls."""
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw = getattr(module, name)
    return lambda *args, **kwargs: raw(*args, **{**kwargs, **reward_kwargs})


def test_verl_compute_score_reads_prompt_and_images_from_extra_info(tmp_path):
    src = Recording()
    fn = verl_load(verl_module.__file__, "compute_score", {"reward_model": src, "reward": "hybrid"})
    png = tmp_path / "a.png"
    red().save(png)
    # as verl's parquet rows hold an image: {"bytes": ..., "path": ...}
    info = {"question": "What colour?", "images": [{"bytes": png.read_bytes(), "path": "a.png"}], "index": 3}
    out = fn(data_source="synthetic", solution_str="blue<|im_end|>", ground_truth="red", extra_info=info)
    assert out == {"score": sigmoid(14.0), "rule_match": 0.0, "images": 1.0}
    assert src.calls[-1][0].prompt == "What colour?" and src.calls[-1][0].responses == ("blue",)
    assert fn(data_source="s", solution_str="Red.", ground_truth="red", extra_info=info)["score"] == 1.0
    with pytest.raises(BaseRewardError, match=r"extra_info has no prompt .* \(keys present: \['index'\]\)"):
        fn(data_source="s", solution_str="x", ground_truth="y", extra_info={"index": 1})


def test_verl_batch_form_groups_a_prompts_completions(tmp_path):
    src = Recording()
    fn = verl_load(verl_module.__file__, "compute_score_batch", {"reward_model": src})
    info = {"prompt": [{"role": "user", "content": "How many?"}], "image": str(tmp_path / "x.png")}
    scores = fn(data_sources=["d"] * 3, solution_strs=["4", "five", "six"], ground_truths=["4"] * 3,
                extra_infos=[info] * 3)
    assert scores == [1.0, sigmoid(14.0), sigmoid(13.0)]
    assert [(g.prompt, g.responses) for g in src.calls[-1]] == [("How many?", ("five", "six"))]


def test_verl_without_a_model_says_how_to_name_one(monkeypatch):
    monkeypatch.delenv("BASEREWARD_RM", raising=False)
    with pytest.raises(BaseRewardError, match="pass reward_model= in reward_kwargs or set BASEREWARD_RM"):
        verl_module.compute_score("d", "x", "y", {"question": "q"})


def openrlhf_load(path):
    """OpenRLHF: spec_from_file_location("reward_func", path), then reward_module.reward_func."""
    spec = importlib.util.spec_from_file_location("reward_func", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


def test_openrlhf_reward_file_with_labels_and_a_prompt_image_map(tmp_path):
    src = Recording()
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "What shape?", "images": ["s.png"]}) + "\n")
    user_file = tmp_path / "reward.py"
    user_file.write_text(
        "from basereward.rl.openrlhf import make_reward_func\n"
        f"reward_func = make_reward_func(SOURCE, prompt_images={str(tmp_path / 'prompts.jsonl')!r})\n")
    spec = importlib.util.spec_from_file_location("reward_func", user_file)
    module = importlib.util.module_from_spec(spec)
    module.SOURCE = src  # what the three-line file would name: a model dir or server URL
    spec.loader.exec_module(module)
    prompt = "<|im_start|>user\nWhat shape?<|im_end|>\n<|im_start|>assistant\n"
    # one sample per call, as OpenRLHF's single-turn executor sends it
    out = module.reward_func([prompt + "A star.<|im_end|>"], [prompt], ["circle"])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"].tolist() == pytest.approx([sigmoid(17.0)])
    assert out["extra_logs"]["images"].tolist() == [1.0] and out["extra_logs"]["rule_match"].tolist() == [0.0]
    (group,) = src.calls[-1]
    assert (group.prompt, group.responses, group.images) == ("What shape?", ("A star.",), (str(tmp_path / "s.png"),))
    # a JSON label carries the answer, the images and the question itself
    label = json.dumps({"answer": "star", "images": ["/data/b.png", "/data/c.png"], "question": "Name it."})
    out = module.reward_func([prompt + "Star<|im_end|>", prompt + "moon"], [prompt] * 2, [label] * 2)
    assert out["rewards"].tolist() == pytest.approx([1.0, sigmoid(24.0)])
    assert src.calls[-1][0].prompt == "Name it." and len(src.calls[-1][0].images) == 2


def test_openrlhf_module_file_itself_is_configured_by_environment(monkeypatch):
    monkeypatch.setattr(openrlhf_module, "_DEFAULT", None)
    monkeypatch.delenv("BASEREWARD_RM", raising=False)
    monkeypatch.setenv("BASEREWARD_REWARD", "rule")
    reward_func = openrlhf_load(openrlhf_module.__file__)
    out = reward_func(["Q: 2+2? A: 4"], ["Q: 2+2? A:"], ["4"])
    assert out["rewards"].tolist() == [1.0]
    monkeypatch.setenv("BASEREWARD_REWARD", "hybrid")
    with pytest.raises(BaseRewardError, match="set BASEREWARD_RM to a model directory"):
        openrlhf_load(openrlhf_module.__file__)(["q a"], ["q"], ["a"])
