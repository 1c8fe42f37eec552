"""Language-model outputs of a backbone: token log-probabilities and KV-cached sampling.

The generative judges (grm/) use the same backbones as the Naive-RM, read through their LM head
instead of the reward head:

* `lm_head_weight(backbone)` - the (V, H) output projection: the input embeddings when the LM ties
  them (SmolLM2, small Qwen), else `lm_head.weight` read from the checkpoint's safetensors (the
  backbones load the bare decoder, so the head is not in memory until a judge asks for it).
* `target_log_probs(backbone, batch, hidden)` - log p of every response token after the first,
  from a normal (collate -> forward) batch: one forward serves SFT, RL and scoring, with the
  truncation rule, image sharing and prefix sharing of the Naive-RM path. The first response
  token is a fixed lead (e.g. "<think>") whose own probability is never needed, so a backbone
  that returns response-only hidden states (shared prefix) still gives every needed prediction.
* `sample(backbone, group, ...)` - n continuations of one prompt: the prompt (with its images and
  the lead) runs once, its cache is copied to the n rows, and tokens are drawn step by step.

A backbone supports generation when it implements `generation_prompt(batch, length)` (embeddings
and positions of row 0's first `length` tokens) and `text_decoder()`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.schema import Group
from ..errors import ConfigError
from .prefix import new_cache


def lm_head_weight(backbone: Any) -> torch.Tensor:
    """(V, H) LM head of the backbone's decoder (cached on the backbone after the first call)."""
    cached = getattr(backbone, "_lm_head_weight", None)
    if cached is not None:
        return cached
    decoder = backbone.text_decoder()
    config = decoder.config
    embed = decoder.get_input_embeddings().weight
    text_cfg = getattr(config, "text_config", config)
    if getattr(config, "tie_word_embeddings", False) or getattr(text_cfg, "tie_word_embeddings", False):
        weight = embed
    else:
        weight = _read_lm_head(backbone.cfg.path).to(embed.device, embed.dtype)
        weight.requires_grad_(False)
    object.__setattr__(backbone, "_lm_head_weight", weight)  # not a registered parameter: never saved
    return weight


def _read_lm_head(path: str) -> torch.Tensor:
    from safetensors import safe_open

    root = Path(path)
    index = root / "model.safetensors.index.json"
    files = [root / "model.safetensors"]
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [root / weight_map[k] for k in weight_map if k.endswith("lm_head.weight")][:1]
    for f in files:
        if f.is_file():
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                    if key.endswith("lm_head.weight"):
                        return fh.get_tensor(key)
    raise ConfigError(f"{path}: the LM does not tie its embeddings and no lm_head.weight was found in its "
                      "safetensors files; a generative judge needs the LM head")


def pool_ids(backbone: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Token ids aligned with the backbone's hidden states: the responses alone when the batch ran
    on a shared prefix (`pool_mask` is then `resp_mask`), else the full sequences."""
    if "resp_mask" in batch and backbone.pool_mask(batch) is batch["resp_mask"]:
        return batch["resp_ids"]
    return batch["input_ids"]


@dataclass
class TargetLogProbs:
    """Per-sequence view of the response tokens after the lead token."""

    log_probs: torch.Tensor  # (N, L) log p(target token), 0 where mask is 0
    mask: torch.Tensor  # (N, L) 1 on real target positions
    ids: torch.Tensor  # (N, L) the target token ids
    logits_rows: torch.Tensor | None = None  # (M, V) kept only when asked (answer scoring)


def target_log_probs(backbone: Any, batch: dict[str, Any], hidden: torch.Tensor,
                     keep_logits: bool = False) -> TargetLogProbs:
    """log p of each response token after the first one, from hidden states (N, T, H) aligned with
    `backbone.pool_mask(batch)`. The prediction of token t+1 is read at position t."""
    mask = backbone.pool_mask(batch).to(hidden.device)  # (N, T)
    resp = backbone.response_mask(batch, mask).bool()  # (N, T)
    ids = pool_ids(backbone, batch).to(hidden.device)  # (N, T)
    src = resp[:, :-1] & resp[:, 1:]  # position t predicts a response token t+1 (t itself in the response)
    rows, cols = torch.nonzero(src, as_tuple=True)
    weight = lm_head_weight(backbone)
    logits = hidden[rows, cols].float() @ weight.float().T  # (M, V)
    logp = torch.log_softmax(logits, dim=-1)
    targets = ids[rows, cols + 1]
    picked = logp.gather(1, targets.unsqueeze(1)).squeeze(1)  # (M,)
    N, L = src.shape
    out = torch.zeros(N, L, dtype=picked.dtype, device=hidden.device)
    out[rows, cols] = picked
    tgt = torch.zeros(N, L, dtype=ids.dtype, device=hidden.device)
    tgt[rows, cols] = targets
    return TargetLogProbs(out, src.to(out.dtype), tgt, logp if keep_logits else None)


def answer_log_odds(backbone: Any, batch: dict[str, Any], hidden: torch.Tensor,
                    answer_ids: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """At each sequence's last target token that is one of `answer_ids` (the verdict "1"/"2"):
    (log p(answer 1) - log p(answer 2) (N,), log p of both (N, 2)). A row without a verdict
    token gives 0 and -inf."""
    return _odds_from(target_log_probs(backbone, batch, hidden, keep_logits=True), answer_ids)


def _odds_from(t: TargetLogProbs, answer_ids: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    assert t.logits_rows is not None
    device = t.ids.device
    valid = t.mask.bool()
    is_answer = ((t.ids == answer_ids[0]) | (t.ids == answer_ids[1])) & valid
    N, L = is_answer.shape
    # Row of logits_rows of every target position (nonzero order = row-major, as in target_log_probs).
    flat = torch.full((N, L), -1, dtype=torch.long, device=device)
    flat[valid] = torch.arange(int(valid.sum()), device=device)
    last = torch.where(is_answer, torch.arange(L, device=device).expand(N, L), -1).max(dim=1).values  # (N,)
    both = torch.full((N, 2), float("-inf"), device=device)
    have = last >= 0
    if bool(have.any()):
        rows = flat[torch.arange(N, device=device)[have], last[have]]
        both[have] = t.logits_rows[rows][:, list(answer_ids)]
    odds = torch.where(have, both[:, 0] - both[:, 1], torch.zeros(N, device=device))
    return odds, both


@functools.lru_cache(maxsize=8)
def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The token ids of the verdicts "1" and "2" as they appear in `<answer>k</answer>`: the first
    token where the two tokenisations differ (so a tokenizer that merges digits with a neighbour is
    read the way it writes them)."""
    one = tokenizer("<answer>1</answer>", add_special_tokens=False)["input_ids"]
    two = tokenizer("<answer>2</answer>", add_special_tokens=False)["input_ids"]
    for x, y in zip(one, two):
        if x != y:
            return int(x), int(y)
    raise ConfigError("the tokenizer writes <answer>1</answer> and <answer>2</answer> the same way")


def judge_outputs(backbone: Any, batch: dict[str, Any], hidden: torch.Tensor) -> torch.Tensor:
    """(N, 2) per judge example: [mean NLL of its target tokens, log-odds of the right verdict]
    (`batch["answer_sign"]` (N,): +1 when the right verdict is "1")."""
    ids = answer_token_ids(backbone.collator.tokenizer)
    t = target_log_probs(backbone, batch, hidden, keep_logits=True)
    nll = -(t.log_probs * t.mask).sum(1) / t.mask.sum(1).clamp_min(1.0)  # (N,)
    odds, _ = _odds_from(t, ids)
    return torch.stack([nll, odds * batch["answer_sign"].to(odds.device, odds.dtype)], dim=1)


@dataclass
class Sample:
    """One drawn continuation (after the lead)."""

    text: str
    token_ids: list[int]
    log_prob: float  # sum of the drawn tokens' log-probabilities
    finished: bool  # stopped on an end token (else ran into max_new_tokens)


@torch.no_grad()
def sample(backbone: Any, group: Group, lead: str, n: int = 1, max_new_tokens: int = 96,
           temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[Sample]:
    """n continuations of `group.prompt` (with its images and history) after the assistant turn
    opens with `lead`. Greedy when temperature == 0. KV-cached: the prompt runs once."""
    if not hasattr(backbone, "generation_prompt"):
        raise ConfigError(f"backbone {backbone.registry_name!r} cannot generate text (no generation_prompt)")
    tok = backbone.collator.tokenizer
    batch = backbone.collate([Group(prompt=group.prompt, images=group.images, responses=(lead,),
                                    history=group.history)])
    decoder, embeds, positions = backbone.generation_prompt(batch, _prompt_length(tok, batch))
    # embeds (1, Tp, H); positions (1, Tp) / (3, 1, Tp), or None for 0..Tp-1
    weight = lm_head_weight(backbone)
    embed = decoder.get_input_embeddings()
    cache = new_cache(decoder)
    out = decoder(inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True)
    h = out.last_hidden_state[:, -1]  # (1, H)
    cache.batch_repeat_interleave(n)
    h = h.expand(n, -1)
    next_pos = (int(positions.max()) + 1) if positions is not None else embeds.shape[1]
    stop = {i for i in (tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id) if isinstance(i, int) and i >= 0}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    drawn = torch.zeros(n, 0, dtype=torch.long)
    logp_sum = torch.zeros(n, dtype=torch.float64)
    done = torch.zeros(n, dtype=torch.bool)
    for step in range(max_new_tokens):
        logits = (h.float() @ weight.float().T).cpu()  # (n, V)
        logp = torch.log_softmax(logits, dim=-1)
        if temperature <= 0:
            nxt = logp.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                probs = _top_p(probs, top_p)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        nxt = torch.where(done, torch.zeros_like(nxt), nxt)
        logp_sum += torch.where(done, 0.0, logp.gather(1, nxt.unsqueeze(1)).squeeze(1).double())
        drawn = torch.cat([drawn, nxt.unsqueeze(1)], dim=1)
        done |= torch.tensor([int(t) in stop for t in nxt.tolist()])
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        pos = torch.full((n, 1), next_pos + step, dtype=torch.long, device=embeds.device)
        if positions is not None and positions.dim() == 3:
            pos = pos.unsqueeze(0).expand(positions.shape[0], n, 1)
        step_embeds = embed(nxt.to(embeds.device)).unsqueeze(1).to(embeds.dtype)  # (n, 1, H)
        h = decoder(inputs_embeds=step_embeds, position_ids=pos, cache=cache, use_cache=True).last_hidden_state[:, -1]
    samples = []
    for i in range(n):
        ids = drawn[i].tolist()
        cut = next((k for k, t in enumerate(ids) if t in stop), None)
        body = ids if cut is None else ids[:cut]
        samples.append(Sample(tok.decode(body, skip_special_tokens=True), body, float(logp_sum[i]), cut is not None))
    return samples


def _prompt_length(tok: Any, batch: dict[str, Any]) -> int:
    """Tokens of row 0 up to the end of the lead: the full row without the end-of-turn markers the
    chat template put after the response (an end token, maybe a newline)."""
    ids = batch["input_ids"][0, : int(batch["attention_mask"][0].sum())].tolist()
    special = set(tok.all_special_ids)
    n = len(ids)
    while n > 1 and (ids[n - 1] in special or not tok.decode([ids[n - 1]]).strip()):
        n -= 1
    return n


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (nucleus sampling)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)
