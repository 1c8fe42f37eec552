"""Text-only protocols -> (prompt, images, response): OpenRLHF's `/get_reward` and vLLM's `/classify`.

Both frameworks send text the policy's chat template produced. OpenRLHF sends `query` (prompt +
response as decoded, end-of-turn tokens included) and `prompts` (the prompt text, a prefix of
the query); verl sends one chat-templated conversation. The reward model renders its own chat
template, so the server recovers the plain prompt and response:

- the response is the query after its prompt (OpenRLHF) or the text after the last assistant
  header (a known chat format: ChatML, Llama 3, Gemma, Phi-3), without trailing end-of-turn
  markers;
- the prompt is the last user turn of a known chat format, image placeholders removed, or the
  prompt text as sent when no format is recognised;
- the images come from the operator's prompt map (`--prompt-images FILE`, pair or prompt JSONL):
  the entry whose prompt equals the recovered prompt, else the longest entry contained in the
  prompt text. Its prompt text is then the one scored. A conversation that shows image
  placeholders but finds no image is refused rather than scored without its image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..data.paths import resolve_image_path
from ..errors import DataError
from ..io import iter_jsonl
from .schemas import RequestError


@dataclass(frozen=True)
class ChatFormat:
    name: str
    user: str
    assistant: str
    end: str


CHAT_FORMATS = (
    ChatFormat("ChatML", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    ChatFormat("Llama 3", "<|start_header_id|>user<|end_header_id|>\n\n",
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    ChatFormat("Gemma", "<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>"),
    ChatFormat("Phi-3", "<|user|>\n", "<|assistant|>\n", "<|end|>"),
)
# Tokens a decoded sequence may end with (end of turn, end of text, padding).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<eos>",
               "</s>", "<|end|>", "<pad>", "<|pad|>")
# Image placeholders chat templates put in the user turn (Qwen-VL, LLaVA / verl, Llama 3.2, Gemma 3).
IMAGE_PLACEHOLDERS = ("<|vision_start|><|image_pad|><|vision_end|>", "<image>", "<|image|>", "<start_of_image>")
_FORMAT_NAMES = ", ".join(f.name for f in CHAT_FORMATS)


@dataclass(frozen=True)
class TextSample:
    """A prompt and a response recovered from text, and how many image placeholders it showed."""

    prompt: str
    response: str
    placeholders: int = 0


def strip_end_markers(text: str) -> str:
    """`text` without a trailing run of end-of-turn / padding markers (and the newlines after them)."""
    while True:
        trimmed = text.rstrip("\n")
        for marker in END_MARKERS:
            if trimmed.endswith(marker):
                text = trimmed[: -len(marker)]
                break
        else:
            return text


def _plain_prompt(text: str) -> tuple[str, int]:
    """The last user turn of a known chat format without image placeholders, and their count;
    the text itself (stripped) when no format is recognised."""
    for fmt in CHAT_FORMATS:
        start = text.rfind(fmt.user)
        if start >= 0:
            body = text[start + len(fmt.user):]
            end = body.find(fmt.end)
            text = body if end < 0 else body[:end]
            break
    count = 0
    for ph in IMAGE_PLACEHOLDERS:
        count += text.count(ph)
        text = text.replace(ph, "")
    return text.strip(), count


def split_conversation(text: str) -> TextSample:
    """A whole chat-templated conversation (verl's `/classify` input) -> prompt and response."""
    best = None
    for fmt in CHAT_FORMATS:
        pos = text.rfind(fmt.assistant)
        if pos >= 0 and (best is None or pos > best[0]):
            best = (pos, fmt)
    if best is None:
        raise RequestError(422, f"cannot split the input into prompt and response: no assistant turn of a "
                                f"known chat format ({_FORMAT_NAMES}); send items to /v1/score instead")
    pos, fmt = best
    prompt, count = _plain_prompt(text[:pos])
    return TextSample(prompt, strip_end_markers(text[pos + len(fmt.assistant):]), count)


def split_query(query: str, prompt: str | None) -> TextSample:
    """OpenRLHF's query (prompt + response) and its prompt -> prompt and response."""
    if prompt is None:
        return split_conversation(query)
    at = query.find(prompt) if prompt else -1
    if at < 0:
        raise RequestError(422, "the query does not contain its prompt (prompts[i] must be the prefix of query[i])")
    lead = query[:at]
    for marker in END_MARKERS:  # left padding of a batch-decoded sequence
        lead = lead.replace(marker, "")
    if lead.strip():
        raise RequestError(422, "the query does not start with its prompt (prompts[i] must be the prefix of query[i])")
    plain, count = _plain_prompt(prompt)
    return TextSample(plain, strip_end_markers(query[at + len(prompt):]), count)


_AMBIGUOUS = object()


class PromptMap:
    """Prompt -> image paths, loaded by the operator at start (`--prompt-images FILE`)."""

    def __init__(self, entries: dict[str, object], source: str = "") -> None:
        self._entries = entries  # stripped prompt -> (prompt, real paths) | _AMBIGUOUS
        self._by_length = sorted(entries, key=len, reverse=True)
        self._memo: dict[str, tuple[str, tuple[str, ...]] | None] = {}
        self.source = source

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ambiguous(self) -> int:
        return sum(1 for v in self._entries.values() if v is _AMBIGUOUS)

    @classmethod
    def load(cls, path: str, root: str | None = None) -> "PromptMap":
        """Read a JSONL file of `{"prompt": str, "images": [path, ...]}` records (pair files
        qualify; other fields are ignored). Image paths are relative to the file and, with a root,
        must lie inside it. A prompt listed with two different image lists becomes ambiguous:
        requests that land on it are refused."""
        base = os.path.dirname(os.path.abspath(path))
        entries: dict[str, object] = {}
        for where, record in iter_jsonl(path, empty="no prompts"):
            prompt, images = record.get("prompt"), record.get("images", [])
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{where}: field 'prompt' must be a non-empty string")
            if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
                raise DataError(f"{where}: field 'images' must be a list of non-empty path strings")
            try:
                real = tuple(resolve_image_path(p, base_dir=base, root=root) for p in images)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            key = prompt.strip()
            old = entries.get(key)
            if old is None:
                entries[key] = (prompt, real)
            elif old is not _AMBIGUOUS and old[1] != real:  # type: ignore[index]
                entries[key] = _AMBIGUOUS
        return cls(entries, source=path)

    def lookup(self, text: str) -> tuple[str, tuple[str, ...]] | None:
        """(prompt as listed, image paths) for a prompt text, or None when nothing matches."""
        key = text.strip()
        if key in self._memo:
            return self._memo[key]
        hit = self._entries.get(key)
        if hit is None:
            hit = self._contained(key)
        if hit is _AMBIGUOUS:
            raise RequestError(422, "the prompt is listed in the server's prompt map with different images "
                                    "(ambiguous); send the images inline")
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[key] = hit  # type: ignore[assignment]
        return hit  # type: ignore[return-value]

    def _contained(self, text: str) -> object | None:
        found = None
        for prompt in self._by_length:
            if found is not None and len(prompt) < len(found):
                break
            if prompt in text:
                if found is not None:  # two different prompts of the same length
                    return _AMBIGUOUS
                found = prompt
        return None if found is None else self._entries[found]
