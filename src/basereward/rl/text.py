"""Prompt and completion text out of the shapes RL frameworks use.

A prompt arrives as plain text, as chat messages (`[{"role": "user", "content": ...}]`, content a
string or a list of `{"type": "text"|"image", ...}` parts), or already rendered through a chat
template (OpenRLHF's `prompts`). The reward model is given the user's question: the last user
turn's text. Images found in message parts are returned separately.
"""

from __future__ import annotations

import re
from typing import Any

# Chat templates whose rendered text we can read back: ChatML (Qwen, SmolLM), Llama 3, Gemma.
_USER_TURNS = (
    re.compile(r"<\|im_start\|>user\s*\n(.*?)<\|im_end\|>", re.S),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)<\|eot_id\|>", re.S),
    re.compile(r"<start_of_turn>user\s*\n(.*?)<end_of_turn>", re.S),
)
# Special tokens a decoded sequence may end with (skip_special_tokens=False leaves them in).
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<end_of_turn>",
              "<eos>", "<|end|>")
# Vision placeholders left in rendered prompts.
_VISION_TOKENS = re.compile(r"<\|vision_start\|>(?:<\|image_pad\|>)*<\|vision_end\|>|<image>|<\|image_pad\|>")


def _parts(content: Any) -> tuple[list[str], list[Any]]:
    """(texts, images) of one message's content."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    texts, images = [], []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind in ("image", "image_url"):
                img = part.get("image", part.get("image_url"))
                if isinstance(img, dict):  # OpenAI style {"url": ...}
                    img = img.get("url")
                if img is not None:
                    images.append(img)
    return texts, images


def is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def prompt_text_and_images(prompt: Any) -> tuple[str, list[Any]]:
    """The user's question and any images inside a plain or conversational prompt.

    >>> prompt_text_and_images([{"role": "system", "content": "Be brief."},
    ...     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}])
    ('What colour?', [])
    >>> prompt_text_and_images("How many?")
    ('How many?', [])
    """
    if isinstance(prompt, str):
        return prompt, []
    if not is_messages(prompt):
        raise TypeError(f"a prompt must be text or chat messages, got {type(prompt).__name__}")
    users = [m for m in prompt if m.get("role") == "user"] or list(prompt)
    texts, _ = _parts(users[-1].get("content"))
    images = [img for m in prompt for img in _parts(m.get("content"))[1]]
    return "\n".join(t for t in texts if t).strip(), images


def completion_text(completion: Any) -> str:
    """A completion's text: plain, or the assistant messages of a conversational completion.

    >>> completion_text([{"role": "assistant", "content": "Red."}])
    'Red.'
    """
    if isinstance(completion, str):
        return completion
    if not is_messages(completion):
        raise TypeError(f"a completion must be text or chat messages, got {type(completion).__name__}")
    texts = [t for m in completion if m.get("role", "assistant") == "assistant" for t in _parts(m.get("content"))[0]]
    return "\n".join(texts)


def strip_end_tokens(text: str) -> str:
    """`text` without trailing end-of-turn / end-of-text tokens.

    >>> strip_end_tokens("Blue.<|im_end|><|endoftext|>")
    'Blue.'
    """
    changed = True
    while changed:
        changed = False
        text = text.rstrip()
        for tok in END_TOKENS:
            if text.endswith(tok):
                text, changed = text[: -len(tok)], True
    return text


def untemplate(rendered: str) -> str:
    """The last user turn of a prompt rendered through a known chat template, else the text as is.

    >>> untemplate("<|im_start|>system\\nHi<|im_end|>\\n"
    ...            "<|im_start|>user\\nWhat shape?<|im_end|>\\n<|im_start|>assistant\\n")
    'What shape?'
    """
    for pattern in _USER_TURNS:
        turns = pattern.findall(rendered)
        if turns:
            return _VISION_TOKENS.sub("", turns[-1]).strip()
    return rendered


def response_from_query(query: str, prompt: str) -> str:
    """The response part of a decoded prompt+response sequence (OpenRLHF's `query`).

    >>> response_from_query("<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\nA red star.<|im_end|>",
    ...                     "<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\n")
    'A red star.'
    """
    at = query.find(prompt) if prompt else -1
    if at >= 0:  # usually 0; later when decoding added a BOS token in front
        rest = query[at + len(prompt):]
    else:
        # Decoding may normalise whitespace: cut after the longest common prefix.
        k = 0
        for a, b in zip(query, prompt):
            if a != b:
                break
            k += 1
        rest = query[k:]
    return strip_end_tokens(rest).strip()
