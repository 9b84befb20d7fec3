"""The word lists shared by the paper's synthetic datasets and the offline toy evaluator.

The toy evaluator is trained to rate exactly these concepts, so the synthetic datasets
(`FeatureData.synthetic`) draw their concept words from here too.

Two kinds of concept:

* `CONCEPTS`: the label is one token of the toy evaluator's vocabulary ("animal", "mammal",
  "number", "digit", "color", "food"); ``LabelConfig(label_length=1)`` can find it. Two are
  hierarchies (`SUBSETS`): "mammal" ⊂ "animal" and "digit" ⊂ "number".
* `TWO_TOKEN_CONCEPTS`: the label needs two tokens. "vehicle" is split by the toy evaluator's
  tokenizer into "ve" + "hicle" (`VEHICLE_PIECES`); each piece alone, or the two swapped, means
  nothing (rated "0" for every word, like any other token), so only ``label_length=2`` with the
  exact pair separates the vehicles from the rest.
"""

from __future__ import annotations

MAMMALS = (
    "cat", "dog", "mouse", "bear", "horse", "cow", "pig", "sheep", "goat", "rabbit", "fox",
    "wolf", "lion", "tiger", "deer", "whale", "monkey", "bat", "rat", "elephant", "zebra",
    "camel",
)
NON_MAMMAL_ANIMALS = (
    "bird", "frog", "duck", "fish", "snake", "crow", "crab", "owl", "eagle", "shark",
    "turtle", "lizard", "bee", "ant", "spider", "snail", "toad", "hen", "parrot", "swan",
    "salmon", "worm",
)
ANIMALS = MAMMALS + NON_MAMMAL_ANIMALS
NUMBER_WORDS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "twenty", "fifty", "hundred",
)
DIGITS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "12", "42", "100")
NUMBERS = NUMBER_WORDS + DIGITS
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown")
FOODS = (
    "apple", "cherry", "bread", "cheese", "rice", "soup", "cake", "pear", "plum", "grape",
    "butter", "honey",
)
# Members of the two-token concept "vehicle".
VEHICLES = (
    "car", "bus", "truck", "van", "taxi", "tram", "ship", "boat", "bike", "plane", "jeep",
    "tractor",
)
# Words that belong to no concept: hard negatives for every label.
OBJECTS = (
    "book", "chair", "table", "lamp", "accordion", "key", "house", "door", "pen", "cup",
    "window", "road", "stone", "river", "cloud", "shoe", "clock", "bottle", "song", "letter",
)

# concept label -> member words, for the concepts whose label is one token: what the toy
# evaluator reads at the single label slot.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "animal": ANIMALS,
    "mammal": MAMMALS,
    "number": NUMBERS,
    "color": COLORS,
    "food": FOODS,
    "digit": DIGITS,
}

# subset concept -> its parent concept: the hierarchies of the toy world. A feature that fires
# on a subset's members only should get the subset's label, however rare the parent's other
# members are in the text (the paper's hierarchy failure, §3.2).
SUBSETS: dict[str, str] = {"mammal": "animal", "digit": "number"}

# concept label -> member words, for the concepts whose label is two tokens of the toy
# evaluator's vocabulary, read at two consecutive label slots.
TWO_TOKEN_CONCEPTS: dict[str, tuple[str, ...]] = {
    "vehicle": VEHICLES,
}
# The toy evaluator's tokens for "vehicle" (its training script checks this split).
VEHICLE_PIECES = ("ve", "hicle")
