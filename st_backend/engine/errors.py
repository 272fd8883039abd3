"""The error a bad input raises, wherever it is found."""


class InputError(TypeError, ValueError):
    """An input no model takes (a wrong type, a malformed pair), naming which one and why.

    Both a TypeError and a ValueError: code written for sentence-transformers catches ValueError (what ST raises
    for bad inputs), code written for st_backend's earlier releases caught TypeError."""
