"""Request and response bodies of the reward server (pydantic; they are also the OpenAPI docs).

Our own API (`/v1/*`) refuses unknown fields, so a misspelt field is a 422 rather than silently
dropped. The two foreign protocols (`/get_reward` from OpenRLHF, `/classify` in vLLM's shape)
accept and ignore fields they do not name, as those servers do: their clients send extras.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RequestError(Exception):
    """A refusal the sender can fix: an HTTP status (4xx) and one line of detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_IMAGES = ("Images as strings: `data:image/<format>;base64,...`, a path under the server's --image-root, "
           "or an http(s) URL when the server runs with --allow-urls.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreItem(_Strict):
    prompt: str
    images: list[str] = Field(default_factory=list, description=_IMAGES)
    response: str


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(min_length=1, description="items with the same prompt and images are "
                                                            "scored as one group (image encoded once)")


class ScoreResponse(BaseModel):
    rewards: list[float]
    model: str


class RankRequest(_Strict):
    prompt: str
    images: list[str] = Field(default_factory=list, description=_IMAGES)
    responses: list[str] = Field(min_length=1)


class RankResponse(BaseModel):
    rewards: list[float]
    order: list[int] = Field(description="indices of `responses`, best first (ties keep request order)")
    model: str


class CompareRequest(_Strict):
    prompt: str
    images: list[str] = Field(default_factory=list, description=_IMAGES)
    response_a: str
    response_b: str


class CompareResponse(BaseModel):
    better: Literal["a", "b"] = Field(description='"a" when reward_a >= reward_b')
    rewards: list[float]
    margin: float = Field(description="reward_a - reward_b")
    probability: float = Field(description="sigmoid(margin): the Bradley-Terry probability that a is better")
    model: str


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward model call (`--remote_rm_url .../get_reward`)."""

    model_config = ConfigDict(extra="ignore")
    query: list[str] = Field(min_length=1, description="prompt + response text, as the policy's tokenizer decoded it")
    prompts: list[str] | None = Field(default=None, description="the prompt text of each query (its prefix)")
    labels: list[Any] | None = Field(default=None, description="ground truths; not used by a reward model")
    images: list[list[str]] | None = Field(default=None, description="extension: images per query. " + _IMAGES)


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


class ClassifyRequest(BaseModel):
    """vLLM's `/classify` request as verl's reward loop sends it."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    input: str | list[str] = Field(description="chat-templated conversation text (prompt and response)")
    use_activation: bool | None = Field(default=None, description="false: probs hold the raw reward; "
                                                                   "true (vLLM's default): sigmoid(reward)")
    activation: bool | None = Field(default=None, description="older vLLM name of use_activation")
    softmax: bool | None = Field(default=None, description="oldest vLLM name of use_activation")
    images: list[str] | list[list[str]] | None = Field(
        default=None, description="extension: the images of a single input, or one list per input. " + _IMAGES)

    def activated(self) -> bool:
        for flag in (self.use_activation, self.activation, self.softmax):
            if flag is not None:
                return flag
        return True


class ClassificationData(BaseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: None = None


class ClassificationResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ClassificationData]
    usage: ClassificationUsage = Field(default_factory=ClassificationUsage,
                                       description="tokens are not counted by this server (always 0)")
