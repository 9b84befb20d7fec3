"""The word lists shared by the paper's synthetic datasets and the offline toy evaluator.

The toy evaluator is trained to rate exactly these concepts, so the synthetic datasets
(`FeatureData.synthetic`) draw their concept words from here too.
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
# Words that belong to no concept: hard negatives for every label.
OBJECTS = (
    "book", "chair", "table", "lamp", "accordion", "car", "house", "door", "pen", "cup",
    "window", "road", "stone", "river", "cloud", "shoe", "clock", "bottle", "song", "letter",
)

# concept label -> member words. The label is what the toy evaluator reads at the label slot.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "animal": ANIMALS,
    "mammal": MAMMALS,
    "number": NUMBERS,
    "color": COLORS,
    "food": FOODS,
}
