"""A small built-in STS sample shared by the examples: (gold 0-5, sentence1, sentence2)."""

STS_SAMPLE = [
    (5.0, "A man is playing a guitar.", "A man plays the guitar."),
    (4.2, "A woman is slicing an onion.", "A woman cuts an onion."),
    (3.0, "A dog runs in the park.", "A dog is playing outside."),
    (1.6, "A cat sits on the mat.", "A dog sleeps on the sofa."),
    (0.2, "The stock market fell sharply.", "A child is eating ice cream."),
    (4.6, "Kids are playing soccer.", "Children play football."),
    (0.8, "He is cooking dinner.", "The plane landed safely."),
    (2.4, "A man rides a horse.", "A person is riding an animal on a beach."),
]
