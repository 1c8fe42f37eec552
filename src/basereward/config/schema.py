"""The config schema: frozen dataclasses, each field with its docstring underneath.

A backbone's own knobs live in its own section under `model.backbone` (`mini_vl`, `qwen_vl`,
`causal_lm`);
`model.backbone` itself holds what every backbone reads. Derived quantities are methods, never
fields rewritten at run time. Checks that need no model (ranges, keys a backbone does not use)
run when a config is built (`validate`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from .ranges import check_ranges

Activation = Literal["none", "tanh", "relu", "silu", "gelu"]


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = False
    """Wrap the language model in peft LoRA adapters (the base weights stay frozen)."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Module names (suffixes) inside the language model that receive adapters."""


@dataclass(frozen=True)
class MiniVLConfig:
    """`model.backbone.mini_vl`: the embedded default's knobs and its two optional stages."""

    backbones: ClassVar[tuple[str, ...]] = ("mini-vl",)

    image_size: int = 224
    """Images are resized to this square size before the encoder (always frozen: its BatchNorm
    statistics stay ImageNet's)."""
    image_grid: int = 3
    """The encoder's feature map is pooled to an image_grid x image_grid token grid."""
    image_multiscale: bool = True
    """Also feed pooled features of two earlier CNN stages (colour/position detail)."""
    image_tap_max_pool: bool = False
    """Pool the earlier stages per cell by maximum as well as by average (a small object is not
    averaged away by the background around it); needs `image_multiscale`. The demo turns it on."""
    image_encoder_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision the frozen CNN runs in (its features are float32 either way). `bfloat16`: the
    convolutions run under bf16 autocast, ~2x faster on a CPU with AMX/AVX-512 bf16 units and on
    GPUs; the setting is saved with the model, so training and scoring read images alike (on a CPU
    without bf16 units it is emulated, slower but the same features)."""
    image_colour_histogram: bool = False
    """Also feed each cell's colour histogram (125 RGB bins: the share of the cell's pixels in each,
    and whether any pixel is in it) next to the CNN features: colour that does not depend on shape,
    so a colour/shape combination never seen in training reads more like a familiar one. Off in the
    demo: measured, not kept (README, "Where the held-out distribution is lost")."""
    image_semantic: bool = True
    """Feed the CNN's last feature map (1280 channels of ImageNet object semantics) to the projector.
    Off: only the earlier stages (`image_multiscale`, needed then), and the CNN stops after the last
    of them. On rendered pictures the semantic map lets the `words` projector learn which shapes
    come in which colours and misread combinations it never saw; without it the projector names
    such combinations more often, but the demo's reward model read the held-out distribution worse
    (README, "Demo results", thirteenth session). Off in the demo."""
    projector_norm: Literal["joint", "per_block"] = "joint"
    """How the projector normalises its input: `joint`, one LayerNorm over all channels; `per_block`,
    one per block of channels (the semantic map, each stage's average and maximum, the colour
    histogram), so the small early stages are not scaled by the large semantic map's statistics.
    `joint` in the demo: measured, not kept (README, "Demo results", thirteenth session)."""
    projector: Literal["mlp", "words"] = "mlp"
    """`mlp` maps each grid cell to a free vector (LLaVA); `words` maps it to `word_slots` soft
    words: distributions over a vocabulary whose expected input embeddings are the image tokens,
    so the LM reads an image as (soft) text. `words` needs the alignment stage (`data.alignment`,
    grounded captions): it fixes the vocabulary (the words of the captions, saved with the model)
    and trains the projector. On CPU budgets the LM learns to use soft words in minutes, where
    free vectors need far more data and steps."""
    train_projector: bool = True
    """Keep training the projector during reward training. `false`: it trains in the alignment
    stage only; with the LM's lower layers frozen too, nothing below the trained layers then needs
    gradients (cheaper steps, and `cache_trunk` becomes possible)."""
    word_slots: int = 3
    """`words` projector: soft-word tokens per grid cell (a cell reads like "red star ,")."""
    cell_naming: Literal["cover", "centre"] = "cover"
    """Alignment targets of the `words` projector: `cover`: every cell a grounded region covers
    reads its text ("red star" in each of the 1-4 cells a large star spans, so the LM cannot tell
    one large star from several small ones); `centre`: only the cell holding the region's centre
    reads its text, the others it covers read its first word ("red")."""
    position_words: Literal["none", "column", "row_column"] = "none"
    """`words` projector: where a cell is, as words the LM already knows. The CNN features of a
    cell do not say where it lies, and the LM sees the grid as one flat sequence, so "is the star
    left of the circle" means comparing token indices modulo the grid width. `column`: the last
    slot of each cell reads its column half ("left" / "right"; "middle" for the centre column of
    an odd grid) instead of a soft word; `row_column`: the last two slots read its row half
    ("top" / "bottom" / "middle") and column half. The words are fixed input embeddings, not
    learned: the alignment stage leaves those slots alone and a frozen trunk stays cacheable."""
    image_position: Literal["before_prompt", "after_prompt"] = "before_prompt"
    """Where the image tokens sit in the user turn. `after_prompt`: after the question (single-turn
    prompts only), so that the causal LM reads every grid cell knowing what is asked ("is there a
    yellow triangle?" can be checked cell by cell, where before the prompt it takes a search over
    the cells from the question's tokens)."""
    lm_layers: int = 0
    """Keep only the first N decoder layers of the language model (0 = all 30); a shallower LM
    trains several times faster on CPU."""
    share_prefix: bool = True
    """Run a group's shared prefix (chat head, image tokens, prompt) once and its responses on top
    of the cached keys/values, instead of once per response (off with gradient checkpointing)."""
    align_epochs: int = 20
    """Alignment stage: epochs over `data.alignment` (features of the frozen image encoder are
    computed once, so an epoch costs milliseconds per image)."""
    align_lr: float = 1e-3
    """Alignment stage: learning rate."""
    align_colour_permute: bool = False
    """Alignment stage: also train on a copy of each image with its R, G, B channels reordered (the
    same targets, except that a slot whose target is a colour word only has to read *a* colour).
    A projector trained on the images alone learns which shapes come in which colours, and reads
    a combination it never saw (say a pink square, when squares came only in other colours) as
    background; on the copies the shapes come in other colours. Off in the demo: measured, not
    kept (README, "Where the held-out distribution is lost")."""
    align_zoom: float = 0.0
    """Alignment stage: also train on a zoomed-out copy of each image, shrunk by a factor drawn
    uniformly in [align_zoom, 1) and placed anywhere on a canvas of its border colour, its grounded
    boxes moved with it (scale jitter, as grounding and detection pretraining use). The projector
    then reads things at sizes below those its pictures show (narrow bars, small shapes). 0 = off;
    else in (0, 1)."""
    align_jitter: float = 0.0
    """Alignment stage: also train on a photometrically jittered copy of each image: brightness,
    contrast and saturation each scaled by a factor drawn uniformly in [1 - j, 1 + j], then
    Gaussian pixel noise of standard deviation 24·j grey levels (of 255); hue and geometry kept,
    so the grounded targets are the image's own. The projector then reads colours and shapes
    under other lighting, shades and surface noise than its pictures show. 0 = off; else in (0, 1)."""
    cache_trunk: bool = False
    """Trunk-cache stage of reward training: when everything below the trained top layers is frozen
    (`model.backbone.train_lm_layers` > 0, `train_projector: false`, no LoRA), compute the frozen
    trunk's output once per pair, keep it in memory and run only the trained layers on later
    visits: every epoch after the first costs the trained layers alone, with the same rewards and
    gradients as without the cache."""


@dataclass(frozen=True)
class QwenVLConfig:
    """`model.backbone.qwen_vl`: Qwen2.5-VL / Qwen2-VL knobs."""

    backbones: ClassVar[tuple[str, ...]] = ("qwen2.5-vl", "qwen2-vl")

    min_pixels: int = 3136
    """Image processor: minimum pixels per image."""
    max_pixels: int = 401408
    """Image processor: maximum pixels per image (caps visual tokens per image)."""
    freeze_vision: bool = True
    """Freeze the vision tower and its patch merger (the paper trains the LM and head; the ViT
    stays frozen)."""
    share_prefix: bool = True
    """Run a group's shared prefix (chat template, image tokens, prompt) once and its responses on
    top of the cached keys/values with their M-RoPE positions continued, instead of once per
    response (off with gradient checkpointing or sliding-window attention; a batch whose tokenizer
    merges prompt and response tokens differently per response runs in full)."""


@dataclass(frozen=True)
class CausalLMConfig:
    """`model.backbone.causal_lm`: knobs of the text-only `causal-lm` backbone."""

    backbones: ClassVar[tuple[str, ...]] = ("causal-lm",)

    share_prefix: bool = True
    """Run a group's shared prefix (chat template + prompt) once and its responses on top of the
    cached keys/values, instead of once per response (off with gradient checkpointing; a batch
    whose tokenizer merges prompt and response tokens differently per response runs in full)."""


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "mini-vl"
    """Registry name: `qwen2.5-vl`, `qwen2-vl`, `causal-lm` or `mini-vl` (embedded default)."""
    path: str = ""
    """Hub id or local directory of the pretrained weights; empty for mini-vl's embedded weights."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Parameter dtype. `auto` = bfloat16 on a GPU that supports it, float32 otherwise."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers (`sdpa`, `eager`, `flash_attention_2`)."""
    freeze_lm: bool = False
    """Freeze the language model (only projector/adapters/head train)."""
    train_lm_layers: int = -1
    """With `freeze_lm` false: train only the top N decoder layers (-1 = all)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA on the language model (implies the base LM weights are frozen)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    max_length: int = 2048
    """Maximum tokens per sequence: the prompt part (chat template, image tokens, prompt text) plus
    the response."""
    max_prompt_length: int = 0
    """Most tokens the prompt part keeps (0 = half of `max_length`). An over-long prompt loses
    text on `truncation_side` (the template and image tokens always stay); the response keeps the
    rest of `max_length` and loses its end beyond it. The cut depends on the item alone, so a
    reward never depends on what it is batched with; every command reports how many were cut."""
    truncation_side: Literal["left", "right"] = "left"
    """Which end of an over-long prompt text is cut: `left` keeps its end (the question usually
    comes last, as in a dialogue's latest turn); `right` keeps its start."""
    system_prompt: str = ""
    """Optional system message prepended to every conversation."""
    mini_vl: MiniVLConfig = field(default_factory=MiniVLConfig)
    """Settings read only by `mini-vl`; with another backbone every value must stay at its default."""
    qwen_vl: QwenVLConfig = field(default_factory=QwenVLConfig)
    """Settings read only by `qwen2.5-vl` / `qwen2-vl`; with another backbone they must stay at their defaults."""
    causal_lm: CausalLMConfig = field(default_factory=CausalLMConfig)
    """Settings read only by `causal-lm`; with another backbone they must stay at their defaults."""

    def prompt_budget(self) -> int:
        """Tokens the prompt part may keep (`max_prompt_length`, 0 = half of `max_length`)."""
        return self.max_prompt_length or self.max_length // 2

    @staticmethod
    def sections() -> tuple[str, ...]:
        """Names of the per-backbone sections."""
        return ("mini_vl", "qwen_vl", "causal_lm")


@dataclass(frozen=True)
class HeadConfig:
    pooling: Literal["last", "mean"] = "last"
    """Which hidden state the head reads: the last non-padding token (the paper's Naive-RM), or the
    mean over the response tokens (where the backbone reports them, else over all real tokens)."""
    num_layers: int = 2
    """Linear layers in the reward head (1 = linear head; the paper's best is 2)."""
    activation: Activation = "silu"
    """Nonlinearity between layers (the paper's best is SiLU)."""
    hidden_size: int = 0
    """Width of the hidden layers; 0 = the backbone's hidden size (the paper's choice)."""
    zero_init_last: bool = True
    """Initialise the last layer to zero so every reward starts at 0 (first-step BT loss = ln 2)."""


@dataclass(frozen=True)
class JudgeConfig:
    """How a generative judge (model.paradigm grm / longcot-grm) is trained and scores."""

    both_orders: bool = True
    """Score each pair in both answer orders and average (controls position bias); off halves the cost."""
    samples: int = 1
    """LongCoT: judgements drawn per ordered pair (voting@k)."""
    vote: Literal["majority", "confidence"] = "majority"
    """LongCoT: how samples combine: one vote each, or weighted by the verdict token's probability."""
    early_stop: bool = True
    """LongCoT voting: stop drawing once samples // 2 + 1 judgements agree."""
    temperature: float = 1.0
    """LongCoT sampling temperature when samples > 1 (one sample is greedy)."""
    max_new_tokens: int = 96
    """LongCoT: tokens a judgement may take."""
    order_seed: int = 0
    """Training: which half of the pairs show the chosen response second (seeded by pair content)."""
    verdict_weight: float = 0.0
    """Training: loss = SFT loss of the judge's turn + verdict_weight * -log sigmoid(log-odds of the
    right verdict). The SFT loss is a mean over the turn's tokens, so a LongCoT judge's one verdict
    token is ~1/25 of it; this term puts the decision back at the weight of a Bradley-Terry loss.
    0 (default): plain SFT."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The network that produces hidden states."""
    head: HeadConfig = field(default_factory=HeadConfig)
    """The MLP on the last non-padding token's hidden state."""
    paradigm: Literal["naive", "grm", "longcot-grm"] = "naive"
    """naive: reward head on the last token (the paper's Naive-RM); grm: the LM head judges which of
    two responses is better (score = log P("1") - log P("2")); longcot-grm: the judge reasons in
    <think> before its <answer> (R1-Reward)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """Settings of the generative paradigms; with naive they must stay at their defaults."""


@dataclass(frozen=True)
class LossConfig:
    zero_coef: float = 0.0
    """lambda of the zero-coefficient regulariser lambda * mean((r_w + r_l)^2); the paper finds it hurts."""
    length_norm: bool = False
    """Divide each reward by log(len + 1) of its response tokens before the loss; the paper finds it hurts."""
    margin: float = 0.0
    """Optional margin m in -logsigmoid(r_w - r_l - m)."""


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...] = ()
    """Training pair files (JSONL, the pair format) or generator specs (see README)."""
    validation: str = ""
    """Validation pair file evaluated every `train.eval_every` optimizer steps."""
    on_error: Literal["fail", "skip"] = "fail"
    """What to do with invalid rows: stop with `file:line: reason`, or report and skip them."""
    text_ratio: float = -1.0
    """Text-only pairs per multimodal pair after mixing (paper: 0.5); -1 keeps the data as given."""
    length_balance: bool = False
    """Resample so the chosen response is the longer one in half of the pairs (for length-biased data)."""
    max_pairs: int = 0
    """Cap on training pairs after mixing (0 = no cap)."""
    alignment: str = ""
    """Grounded-caption file (see data/regions.py) for the alignment stage of a backbone that has
    one (mini-vl's `words` projector) before reward training; the demo's generator writes one.
    Empty = no stage."""
    image_root: str = ""
    """Folder every image of the training and validation files must lie in (symlinks followed;
    `../`, absolute paths elsewhere and symlinks out are bad rows). Empty = images anywhere."""


# The autocast settings a Scorer takes (`Scorer(precision=...)`, `score/eval --precision`): those of
# `TrainConfig.mixed_precision` that mean bf16 or nothing.
SCORING_PRECISIONS = ("auto", "bf16-where-fast", "bf16", "no")


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/train"
    """Checkpoints, metrics.jsonl and the final model go here."""
    lr: float = 3e-6
    """Peak learning rate (paper grid {1e-5, 3e-6, 1e-6, 3e-7}; best 3e-6)."""
    head_lr: float = 0.0
    """Learning rate for the head and projector; 0 = same as `lr`."""
    lr_grid: tuple[float, ...] = (1e-5, 3e-6, 1e-6, 3e-7)
    """Values tried by `basereward sweep`."""
    global_batch_size: int = 128
    """Pairs per optimizer step across all processes (paper: 128)."""
    micro_batch_size: int = 4
    """Pairs per forward pass on one process."""
    epochs: float = 1.0
    """Passes over the training pairs (fractions allowed)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = derived from epochs)."""
    warmup_ratio: float = 0.03
    """Fraction of steps with linear warmup before cosine decay."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    ema_decay: float = 0.0
    """Exponential moving average of the trainable weights (0 = off), updated after every
    optimizer step with decay min(ema_decay, (1 + step) / (10 + step)); validation and the saved
    model use the average. It is kept in the optimizer state, so checkpoints resume it exactly."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16", "bf16-where-fast"] = "auto"
    """Accelerate mixed precision. `auto`: bf16 on a CUDA GPU that supports it, else no (fp32).
    `bf16-where-fast`: as `auto`, and also bf16 on a CPU with AVX-512 bf16 instructions where a
    1-2 s probe at the start measures bf16 autocast at least 1.2x faster than float32 (AMD Zen 4:
    2.55x, Xeon with AMX: 1.5x faster training steps, benchmarks/cpu_bf16.py); float32 on other
    CPUs: those that would emulate bf16, and those where it runs natively but slower (a 2-core
    Xeon without AMX: 0.63x)."""
    seed: int = 42
    """Seed for initialisation, data order and dropout."""
    eval_every: int = 0
    """Evaluate on `data.validation` every N optimizer steps (0 = only at the end)."""
    save_every: int = 0
    """Write a resumable checkpoint every N optimizer steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep."""
    log_every: int = 1
    """Write a metrics line every N optimizer steps."""
    num_workers: int = 0
    """DataLoader worker processes."""
    resume: str = ""
    """`auto` = resume from the latest checkpoint in output_dir; or a checkpoint directory."""
    init_from: str = ""
    """A saved model to start from (not a checkpoint: no optimizer or step): its trained backbone
    tensors and mini-vl vocabulary, and its head when both are Naive-RMs with the same head. Train
    a reward model further on new data, or start a generative judge (`model.paradigm` grm /
    longcot-grm) from a trained Naive-RM's layers. A resumed run takes everything from its
    checkpoint instead."""

    def grad_accum_steps(self, world_size: int = 1) -> int:
        """Micro-steps per optimizer step so that micro * accum * world = global batch."""
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                f"micro_batch_size*world_size={per_step}"
            )
        return self.global_batch_size // per_step


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone and head."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation data."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Reward-model loss."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and bookkeeping."""


# ----------------------------------------------------------------------------- checks


def _changed(obj: Any) -> list[str]:
    """Fields of a dataclass instance that differ from its defaults."""
    default = type(obj)()
    return [f.name for f in dataclasses.fields(obj) if getattr(obj, f.name) != getattr(default, f.name)]


def _validate_backbone(bb: BackboneConfig, where: str) -> None:
    # A section belongs to the backbones it names: with any other backbone a changed value would
    # be silently ignored, so it is an error that names the key and the chosen backbone.
    for name in bb.sections():
        section = getattr(bb, name)
        if bb.name not in section.backbones:
            changed = _changed(section)
            if changed:
                raise ConfigError(
                    f"{where}.{name}.{changed[0]}: backbone {bb.name!r} does not use it "
                    f"(the {name} section applies to {', '.join(section.backbones)})"
                )
    mv = bb.mini_vl
    if bb.name in mv.backbones:
        if mv.projector != "words" and mv.word_slots != MiniVLConfig.word_slots:
            raise ConfigError(f"{where}.mini_vl.word_slots: only the `words` projector uses it "
                              f"(model.backbone.mini_vl.projector={mv.projector})")
        if mv.position_words != "none":
            need = 2 if mv.position_words == "column" else 3
            if mv.projector != "words" or mv.word_slots < need:
                raise ConfigError(f"{where}.mini_vl.position_words={mv.position_words}: needs the `words` projector "
                                  f"with word_slots >= {need} (one soft word left for what the cell shows)")
        if mv.image_tap_max_pool and not mv.image_multiscale:
            raise ConfigError(f"{where}.mini_vl.image_tap_max_pool: needs image_multiscale=true "
                              "(it pools the earlier stages that multiscale adds)")
        if not mv.image_semantic and not mv.image_multiscale:
            raise ConfigError(f"{where}.mini_vl.image_semantic=false: needs image_multiscale=true "
                              "(without the semantic map the earlier stages are all the projector reads)")
    if bb.max_prompt_length >= bb.max_length:
        raise ConfigError(f"{where}.max_prompt_length ({bb.max_prompt_length}) must be below max_length "
                          f"({bb.max_length}): the response needs room")
    qv = bb.qwen_vl
    if qv.min_pixels > qv.max_pixels:
        raise ConfigError(f"{where}.qwen_vl.min_pixels ({qv.min_pixels}) must not exceed max_pixels ({qv.max_pixels})")


def validate(obj: Any, where: str) -> None:
    """Range and consistency checks of one section (raised as ConfigError naming `where`)."""
    if isinstance(obj, BackboneConfig):
        _validate_backbone(obj, where)
    if isinstance(obj, ModelConfig) and obj.paradigm == "naive" and _changed(obj.judge):
        raise ConfigError(f"{where}.judge.{_changed(obj.judge)[0]}: model.paradigm=naive does not use it "
                          "(the judge section applies to grm and longcot-grm)")
    check_ranges(obj, where)
