"""The wording of every task: question templates and answer templates.

Answer templates are filled twice by `base.answer_pair`, once with the true fact and once with
the hallucinated one, so every template must keep the two answers close in length (the label-leak
rule in the package docstring). Kept apart from the builders so the wording can be read and
audited in one place.
"""

# ----------------------------------------------------------------------------------------------
# Shape scenes

OBJECT_Q_SINGLE = (
    "What shape is shown in the image?",
    "Which shape appears in this picture?",
    "Name the shape in the image.",
    "What kind of shape is drawn here?",
)
OBJECT_Q_MULTI = (
    "What shape is the {c} object?",
    "Which shape is drawn in {c}?",
    "There is one {c} object in the image. What shape is it?",
    "Name the shape of the {c} object.",
)
OBJECT_A = (
    "It is {a_s}.",
    "The shape is {a_s}.",
    "That is {a_s}.",
    "I can see {a_s}.",
    "The object is shaped like {a_s}.",
)
COLOUR_Q = (
    "What colour is the {s}?",
    "What is the color of the {s} in the image?",
    "Which colour is the {s} painted in?",
    "Tell me the colour of the {s}.",
    "What color is the {s} shown here?",
)
COLOUR_A = (
    "The {s} is {c}.",
    "It is {c}.",
    "The {s} in the image is coloured {c}.",
    "{C}: the {s} is filled with {c}.",
    "The {s} has a {c} fill.",
    "That {s} is painted {c}.",
)
COUNT_Q = (
    "How many {p} are there in the image?",
    "Count the {p} in this picture.",
    "How many {p} can you see?",
    "What is the number of {p} shown in the image?",
    "How many {p} does this image contain?",
)
COUNT_A = (
    "There {be} {nw} {noun} in the image.",
    "I count {nw} {noun}.",
    "The image contains exactly {nd} {noun}.",
    "{NW}: that is how many {p} appear in the picture.",
    "Counting carefully, I find {nd} {noun} here.",
)
EXIST_Q = (
    "Is there {a_q} in the image?",
    "Does this picture contain {a_q}?",
    "Can you see {a_q} here?",
    "Is {a_q} present in the image?",
)
# (yes, no) templates share everything but the polarity, so they differ by a few characters and
# which of them is longer is decided by the coin that chose the truth.
EXIST_A = (
    ("Yes, there is {a_q} in the image.", "No, there is no {q} in the image."),
    ("Yes. I can see {a_q} in this picture.", "No. I cannot see {a_q} in this picture."),
    ("Yes, the picture does contain {a_q}.", "No, the picture does not contain {a_q}."),
    ("There is {a_q} here, so the answer is yes.", "There is no {q} here, so the answer is no."),
)
EXIST_A_OTHERS = (
    ("Yes. Besides {others}, the image also has {a_q}.", "No. Besides {others}, the image has no {q}."),
    ("Yes: next to {others} there is {a_q}.", "No: apart from {others} there is no {q}."),
)
SPATIAL_Q_H = (
    "Is the {A} to the left or to the right of the {B}?",
    "Where is the {A} relative to the {B}?",
    "On which side of the {B} is the {A}?",
    "Describe the position of the {A} with respect to the {B}.",
)
SPATIAL_Q_V = (
    "Is the {A} above or below the {B}?",
    "Where is the {A} relative to the {B}?",
    "Describe the position of the {A} with respect to the {B}.",
    "Is the {A} placed above or below the {B}?",
)
SPATIAL_A = (
    "The {A} is {rel} the {B}.",
    "It is {rel} the {B}.",
    "Looking at the image, the {A} appears {rel} the {B}.",
    "The {A} sits {rel} the {B}.",
    "In the picture, the {A} is placed {rel} the {B}.",
)
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
DESC_Q = (
    "Describe the image.",
    "What does this image show?",
    "Give a short description of the scene.",
    "Briefly describe what you see in this picture.",
    "What is in this image?",
)
DESC_A = (
    "The image shows {count}: {items}.",
    "{Items} on a {texture} background.",
    "There {be} {count} on a {texture} background: {items}.",
    "A {texture} background with {items}.",
    "This picture contains {items}.",
)


# ----------------------------------------------------------------------------------------------
# Bar charts

TALLEST_Q = (
    "Which bar in the chart is the tallest?",
    "Which bar has the largest value?",
    "Looking at the bar chart, which colour is the highest bar?",
    "Which bar reaches the highest value in this chart?",
)
TALLEST_A = (
    "The {c} bar is the tallest, reaching {v}.",
    "The highest bar is the {c} one, at {v}.",
    "The {c} bar has the largest value: {v}.",
    "It is the {c} bar, which goes up to {v}.",
)
VALUE_Q = (
    "What value does the {c} bar show?",
    "What is the value of the {c} bar?",
    "How high does the {c} bar reach?",
    "Read off the value of the {c} bar in the chart.",
)
VALUE_A = (
    "The {c} bar shows a value of {v}.",
    "Its value is {v}.",
    "The {c} bar reaches {v}.",
    "Reading the chart, the {c} bar is at {v}.",
)
DIFF_Q = (
    "How much higher is the {a} bar than the {b} bar?",
    "What is the difference between the {a} bar and the {b} bar?",
    "By how much does the {a} bar exceed the {b} bar?",
    "Compute the {a} bar's value minus the {b} bar's value.",
)
DIFF_A = (
    "The {a} bar is at {va} and the {b} bar is at {vb}, so the difference is {d}.",
    "{va} - {vb} = {d}, so the {a} bar is {d} higher.",
    "The difference is {d} ({va} for {a} versus {vb} for {b}).",
    "The {a} bar exceeds the {b} bar by {d}, since {va} - {vb} = {d}.",
)


# ----------------------------------------------------------------------------------------------
# Photos

PHOTO_Q = (
    "Describe this photo.",
    "What is shown in this picture?",
    "Write a one-sentence caption for this image.",
    "What is the subject of this photograph?",
    "What does this image depict?",
)
PHOTO_A = (
    "This photo shows {subject}.",
    "{Subject}, {detail}.",
    "The picture shows {subject}, {detail}.",
    "A photograph of {subject}.",
    "In this image we see {subject}, {detail}.",
)
