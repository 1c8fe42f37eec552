"""The training paraphrase bank: today's templates (`phrases.py`) plus more wordings of each kind,
and neutral sentences for padding either answer. Read by `rephrase.py` when the training
generator runs with `Variety(paraphrase=True)` or `pad > 0`.

None of these strings may appear in the held-out bank (`heldout.py`); tests check both ways.
"""

from __future__ import annotations

from basereward.data.synthetic import phrases
from basereward.data.synthetic.photo_task import PHOTO_FACTS

EXTRA: dict[str, tuple] = {
    "object_q_single": (
        "Which geometric figure is in the picture?", "What figure do you see in the image?",
        "Identify the shape drawn in this image.", "What shape does the object in the picture have?",
    ),
    "object_q_multi": (
        "The image has a {c} object. Which shape does it have?", "Identify the shape of the {c} figure.",
        "What figure is coloured {c} in this image?", "Look at the {c} object: what shape is it?",
    ),
    "object_a": (
        "The figure is {a_s}.", "It looks like {a_s}.", "This is {a_s}.", "I see {a_s} here.",
        "It has the shape of {a_s}.", "The answer is {a_s}.",
    ),
    "colour_q": (
        "Which color does the {s} have?", "In what colour is the {s} drawn?", "Name the colour of the {s}.",
        "The picture shows a {s}. What colour is it?", "Tell me which color the {s} is.",
    ),
    "colour_a": (
        "The {s} is coloured {c}.", "Its colour is {c}.", "The {s} appears {c}.", "I see a {c} {s}.",
        "The colour of the {s} is {c}.", "{C} is the colour of the {s}.",
    ),
    "count_q": (
        "Count how many {p} the image shows.", "What is the total number of {p} here?",
        "How many {p} appear in the picture?", "Tell me the number of {p} in the image.",
    ),
    "count_a": (
        "The picture shows {nw} {noun}.", "There {be} exactly {nw} {noun}.", "I see {nd} {noun} in total.",
        "The number of {p} is {nd}.", "{NW} - the image has {nw} {noun}.", "In all there {be} {nw} {noun}.",
    ),
    "exist_q": (
        "Does the image show {a_q}?", "Is there any {q} in this picture?", "Can {a_q} be seen in the image?",
        "Do you see {a_q} anywhere in the picture?",
    ),
    "exist_a": (
        ("Yes, {a_q} is visible in the image.", "No, no {q} is visible in the image."),
        ("Yes. The image shows {a_q}.", "No. The image shows no {q}."),
        ("Yes, I do see {a_q}.", "No, I do not see {a_q}."),
        # The answer's polarity in other words than yes/no, so it is read from meaning, not one token.
        ("Certainly, the picture contains {a_q}.", "Certainly not, the picture contains no {q}."),
        ("Absolutely, {a_q} is present.", "Absolutely not, {a_q} is absent."),
        ("Of course: {a_q} is there.", "Not one {q} is there."),
        ("Correct, there is {a_q} in it.", "Wrong, there is no {q} in it."),
        ("Yep, {a_q} can be spotted.", "No {q} can be spotted."),
        ("It does: {a_q} is shown.", "It does not: no {q} is shown."),
        ("There is {a_q}, yes.", "There isn't any {q}."),
        ("Definitely, {a_q} is part of the image.", "Definitely not, {a_q} is missing from the image."),
    ),
    "exist_a_others": (
        ("Yes. Along with {others}, there is {a_q}.", "No. There is {others}, but no {q}."),
        ("Besides {others}, the picture does contain {a_q}.", "Besides {others}, the picture contains no {q}."),
        ("Certainly: next to {others} I spot {a_q}.", "Certainly not: next to {others} I spot no {q}."),
    ),
    "spatial_q_h": (
        "Is the {A} on the left or the right of the {B}?", "Which side of the {B} is the {A} on?",
        "How is the {A} placed relative to the {B}, left or right?",
    ),
    "spatial_q_v": (
        "Is the {A} higher or lower than the {B}?", "Is the {A} over or under the {B}?",
        "How is the {A} placed relative to the {B}, above or below?",
    ),
    "spatial_a": (
        "The {A} lies {rel} the {B}.", "You can see the {A} {rel} the {B}.", "The {A} can be found {rel} the {B}.",
        "Relative to the {B}, the {A} is {rel} it.", "The {A} is located {rel} the {B}.",
    ),
    "desc_q": (
        "What can you see in this picture?", "Describe the contents of the image.",
        "Tell me what the image contains.", "Summarise this picture in one sentence.",
    ),
    "desc_a": (
        "The picture has {items}.", "I can see {items} on the background.", "It shows {items}.",
        "The scene contains {count}: {items}.", "{Items} are shown in the picture.",
    ),
    "tallest_q": (
        "Which bar is the highest in this chart?", "Which colour has the tallest bar?",
        "Which bar reaches furthest up?",
    ),
    "tallest_a": (
        "The tallest bar is the {c} one, with {v}.", "The {c} bar is highest at {v}.",
        "The {c} bar, at {v}, is the tallest.", "Highest is the {c} bar with a value of {v}.",
    ),
    "value_q": (
        "Which value does the {c} bar have?", "What number does the {c} bar reach?",
        "How tall is the {c} bar in the chart?",
    ),
    "value_a": (
        "The {c} bar is at {v}.", "The {c} bar has a value of {v}.", "It reaches {v}.",
        "The value of the {c} bar is {v}.",
    ),
    "diff_q": (
        "How far is the {a} bar above the {b} bar?", "What is the {a} bar minus the {b} bar?",
        "Subtract the {b} bar's value from the {a} bar's value.",
    ),
    "diff_a": (
        "The {a} bar reads {va} and the {b} bar {vb}: a difference of {d}.", "It is {d}, since {va} - {vb} = {d}.",
        "{va} minus {vb} gives {d}, so the {a} bar is higher by {d}.",
    ),
    "photo_q": (
        "What is in this photo?", "Caption this picture in one sentence.", "Describe what the photograph shows.",
    ),
    "photo_a": (
        "The photo shows {subject}.", "Here we see {subject}, {detail}.", "It is a picture of {subject}.",
        "{Subject} - {detail}.",
    ),
}

# Neutral padding: no colour, shape, number, position or yes/no, so it carries no fact.
TRAIN_PAD = (
    "I hope this helps.", "Let me know if you have more questions.", "That is my reading of the picture.",
    "I looked at the image carefully.", "Happy to help with anything else.", "Thanks for the question.",
    "This answer is based on the image.", "I checked the picture before answering.",
    "Good question.", "Let me explain what I see.", "Here is my answer.", "I took a careful look.",
    "That should settle it.", "Ask again if anything is unclear.", "This is what the picture tells me.",
    "I studied the whole scene.", "Thank you for asking.", "Happy to look at another picture.",
    "My answer comes from the image alone.", "I hope that is useful.",
)

# Spatial relations in several wordings (one drawn per pair, the same for both answers).
TRAIN_RELATIONS = {
    "left": ("to the left of", "left of", "on the left of", "further left than", "more to the left than"),
    "right": ("to the right of", "right of", "on the right of", "further right than", "more to the right than"),
    "above": ("above", "over", "higher than", "further up than", "placed above"),
    "below": ("below", "under", "lower than", "further down than", "beneath"),
}

# Lead-ins put before both answers of a pair (the same one), so the fact sits further into the text.
TRAIN_LEADS = (
    "Looking at the image, ", "From what I can see, ", "Based on the picture, ", "After checking the image, ",
    "As far as I can tell, ", "In this picture, ", "Having looked closely, ", "To answer your question, ",
)

_BASE: dict[str, tuple] = {
    "object_q_single": phrases.OBJECT_Q_SINGLE, "object_q_multi": phrases.OBJECT_Q_MULTI,
    "object_a": phrases.OBJECT_A, "colour_q": phrases.COLOUR_Q, "colour_a": phrases.COLOUR_A,
    "count_q": phrases.COUNT_Q, "count_a": phrases.COUNT_A, "exist_q": phrases.EXIST_Q,
    "exist_a": phrases.EXIST_A, "exist_a_others": phrases.EXIST_A_OTHERS, "spatial_q_h": phrases.SPATIAL_Q_H,
    "spatial_q_v": phrases.SPATIAL_Q_V, "spatial_a": phrases.SPATIAL_A, "desc_q": phrases.DESC_Q,
    "desc_a": phrases.DESC_A, "tallest_q": phrases.TALLEST_Q, "tallest_a": phrases.TALLEST_A,
    "value_q": phrases.VALUE_Q, "value_a": phrases.VALUE_A, "diff_q": phrases.DIFF_Q, "diff_a": phrases.DIFF_A,
    "photo_q": phrases.PHOTO_Q, "photo_a": phrases.PHOTO_A,
}

# Today's templates alone: what a re-rendered pair is worded from without `paraphrase` (its
# description may name a new background, so the old text cannot be kept).
BASE_BANK: dict[str, object] = {
    **_BASE, "relations": dict(phrases.RELATIONS), "photos": dict(PHOTO_FACTS), "pad": TRAIN_PAD,
}
TRAIN_BANK: dict[str, object] = {
    **{k: tuple(_BASE[k]) + EXTRA[k] for k in _BASE},
    "relations": TRAIN_RELATIONS,
    "photos": dict(PHOTO_FACTS),
    "pad": TRAIN_PAD,
    "leads": TRAIN_LEADS,
}
