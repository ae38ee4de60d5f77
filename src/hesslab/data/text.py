"""A bundled character-level text corpus, its tokenizer and fixed-length LM sequences.

The corpus is generated, not downloaded or read from the Python installation: a small
procedural English-like grammar (determiners, adjectives, nouns, verbs in agreement with
their subjects, prepositional phrases, relative clauses) expanded by a pure-Python
SplitMix64 random number generator. The same seed gives the same characters on every
platform and every Python/NumPy/PyTorch version (text from the standard library's
docstrings changes between Python releases; NumPy's and PyTorch's samplers may change
between their releases). Training and test text come from two independent streams of
the same grammar.

Sequences follow the Hugging Face convention for causal language models: ``labels`` are
the ``input_ids`` themselves and the loss shifts them (position ``t`` predicts token
``t + 1``), so a :class:`~hesslab.data.TensorData` holds ``x = input_ids`` ``[N, T]``
and ``y = labels`` ``[N, T]`` (both ``int64``) and its ``loader()`` yields
``(input_ids, labels)`` batches, the form the ``"causal_lm"`` loss takes.

Example:
    >>> from hesslab.data import text
    >>> split = text(seq_len=32, num_train=64, num_test=16)
    >>> split.train.x.shape, split.train.num_classes
    (torch.Size([64, 32]), 30)
    >>> tok = split.train.meta["tokenizer"]
    >>> tok.decode(split.train.x[0][:20])  # doctest: +SKIP
    'the small cat sees a'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hesslab.data.datasets import Split, TensorData
from hesslab.errors import ConfigurationError, DataError

__all__ = ["CHARS", "CharTokenizer", "generate_corpus", "text", "text_tokenizer"]

#: The corpus alphabet: newline, space, punctuation and the 26 lowercase letters.
CHARS = "\n ,.abcdefghijklmnopqrstuvwxyz"

_MASK = (1 << 64) - 1


class _SplitMix64:
    """SplitMix64 (Steele, Lea, Flood 2014): a portable, exactly reproducible integer RNG."""

    def __init__(self, seed: int) -> None:
        self.state = int(seed) & _MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def choice(self, options: Sequence[str]) -> str:
        return options[self.next() % len(options)]

    def chance(self, p: float) -> bool:
        return (self.next() >> 11) * (1.0 / (1 << 53)) < p


_DET = ("the", "a", "every", "one", "that")
_ADJ = ("small", "old", "quiet", "red", "happy", "tall", "green", "clever", "slow", "bright")
_NOUN = ("cat", "dog", "bird", "child", "teacher", "river", "garden", "farmer", "horse", "ship")
_VERB = ("sees", "likes", "follows", "finds", "helps", "watches", "carries", "knows")
_IVERB = ("sleeps", "runs", "sings", "waits", "laughs", "swims")
_PREP = ("near", "behind", "under", "with", "beside", "over")
_ADV = ("today", "again", "slowly", "often", "at night", "in the morning")


def _noun_phrase(rng: _SplitMix64, depth: int) -> str:
    words = [rng.choice(_DET)]
    if rng.chance(0.5):
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    if depth < 2 and rng.chance(0.25):
        words += [rng.choice(_PREP), _noun_phrase(rng, depth + 1)]
    elif depth < 1 and rng.chance(0.15):
        words += ["that", rng.choice(_VERB), _noun_phrase(rng, depth + 1)]
    return " ".join(words)


def _sentence(rng: _SplitMix64) -> str:
    subject = _noun_phrase(rng, 0)
    if rng.chance(0.35):
        predicate = rng.choice(_IVERB)
    else:
        predicate = f"{rng.choice(_VERB)} {_noun_phrase(rng, 0)}"
    s = f"{subject} {predicate}"
    if rng.chance(0.3):
        s += " " + rng.choice(_ADV)
    if rng.chance(0.2):
        s += f", and {_noun_phrase(rng, 1)} {rng.choice(_IVERB)}"
    return s + ".\n" if rng.chance(0.2) else s + ". "


def generate_corpus(num_chars: int, seed: int = 0) -> str:
    """``num_chars`` characters of the procedural grammar, reproducible from ``seed``.

    Sentences are drawn until the text is long enough, then cut to ``num_chars``. Every
    character lies in :data:`CHARS`.

    Args:
        num_chars: length of the text.
        seed: seed of the SplitMix64 stream (any integer; equal seeds give equal text).
    """
    if num_chars < 1:
        raise ConfigurationError(f"num_chars must be positive, got {num_chars}.")
    rng = _SplitMix64(seed)
    parts: list[str] = []
    total = 0
    while total < num_chars:
        s = _sentence(rng)
        parts.append(s)
        total += len(s)
    return "".join(parts)[:num_chars]


@dataclass(frozen=True)
class CharTokenizer:
    """Character-level tokenizer: token ``i`` is ``chars[i]``.

    Attributes:
        chars: the alphabet, each character once.
    """

    chars: str = CHARS

    def __post_init__(self) -> None:
        if not self.chars or len(set(self.chars)) != len(self.chars):
            raise ConfigurationError("CharTokenizer needs a non-empty alphabet without repeats.")

    @property
    def vocab_size(self) -> int:
        """Number of tokens ``V``."""
        return len(self.chars)

    def encode(self, s: str) -> Tensor:
        """``[len(s)]`` int64 token ids of ``s``.

        Raises:
            DataError: ``s`` has a character outside the alphabet.
        """
        index = {c: i for i, c in enumerate(self.chars)}
        try:
            return torch.tensor([index[c] for c in s], dtype=torch.long)
        except KeyError as e:
            raise DataError(
                f"character {e.args[0]!r} is not in the tokenizer's alphabet {self.chars!r}; "
                "lower-case the text or build a CharTokenizer with that character."
            ) from None

    def decode(self, ids: Tensor | Iterable[int]) -> str:
        """The text of token ids (a 1-D tensor or a sequence of ints)."""
        flat = ids.reshape(-1).tolist() if isinstance(ids, Tensor) else list(ids)
        if any(not 0 <= int(i) < len(self.chars) for i in flat):
            raise DataError(f"token ids must lie in [0, {len(self.chars) - 1}].")
        return "".join(self.chars[int(i)] for i in flat)


def text_tokenizer() -> CharTokenizer:
    """The tokenizer of the bundled corpus (alphabet :data:`CHARS`, ``V = 30``)."""
    return CharTokenizer(CHARS)


def _sequences(
    s: str, tok: CharTokenizer, seq_len: int, n: int, name: str, meta: dict
) -> TensorData:
    ids = tok.encode(s)[: n * seq_len].reshape(n, seq_len)
    return TensorData(ids, ids.clone(), name=name, num_classes=tok.vocab_size, meta=meta)


def text(
    seq_len: int = 64,
    num_train: int = 256,
    num_test: int = 64,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> Split:
    """The bundled character-level corpus as fixed-length causal-LM sequences.

    ``num_train`` (``num_test``) non-overlapping windows of ``seq_len`` characters are cut
    from a training (test) text generated by :func:`generate_corpus` with seeds
    ``2 * seed`` and ``2 * seed + 1``. Both parts have ``x = input_ids`` and
    ``y = labels = input_ids`` (``[N, seq_len]`` int64; the causal-LM loss shifts the
    labels), ``num_classes = V = 30`` and ``meta["tokenizer"]``, a :class:`CharTokenizer`.

    Args:
        seq_len: tokens per sequence ``T``.
        num_train: training sequences.
        num_test: test sequences.
        seed: seed of the text.
        dtype: accepted for the data registry's signature and ignored (token ids are
            integers).

    Returns:
        A :class:`~hesslab.data.Split` named ``"text"``.
    """
    del dtype
    if seq_len < 2 or num_train < 1 or num_test < 0:
        raise ConfigurationError(
            f"text needs seq_len >= 2, num_train >= 1 and num_test >= 0, got seq_len={seq_len}, "
            f"num_train={num_train}, num_test={num_test}."
        )
    tok = text_tokenizer()
    meta = {"tokenizer": tok, "seq_len": seq_len, "seed": seed, "corpus": "procedural grammar"}
    train_text = generate_corpus(num_train * seq_len, 2 * seed)
    train = _sequences(train_text, tok, seq_len, num_train, "text", dict(meta, part="train"))
    test = None
    if num_test:
        test_text = generate_corpus(num_test * seq_len, 2 * seed + 1)
        test = _sequences(test_text, tok, seq_len, num_test, "text", dict(meta, part="test"))
    return Split(train, test)
