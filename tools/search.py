"""The ``search`` tool: BM25 ranking over a small local document collection (no network).

An environment supplies its documents with :func:`search_tool`; the catalog's registered
``search`` searches the documentation of Python's built-in functions and types (built from
their docstrings, so it ships no data and works offline).

Example:
    >>> find = search_tool({"paris": "Paris is the capital of France.",
    ...                     "rome": "Rome is the capital of Italy."})
    >>> find.call({"query": "capital of Italy", "k": 1}).output.splitlines()[0]
    '[1] rome (score 0.47)'
"""

from __future__ import annotations

import builtins
import inspect
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import Field

from agentrl.tool import TOOLS, Tool, tool

__all__ = ["BM25Index", "builtin_docs", "search_tool", "tokenize"]

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "how", "i",
    "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "what",
    "when", "where", "which", "who", "will", "with",
})


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, stop words removed."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25Index:
    """Okapi BM25 (Robertson and Zaragoza, 2009) over an in-memory collection.

    Args:
        documents: ``{id: text}``, or a sequence of texts (ids ``doc0``, ``doc1``, ...).
        k1: term-frequency saturation.
        b: document-length normalization.
    """

    def __init__(self, documents: Mapping[str, str] | Sequence[str], k1: float = 1.5,
                 b: float = 0.75) -> None:
        if isinstance(documents, Mapping):
            items = [(str(k), str(v)) for k, v in documents.items()]
        else:
            items = [(f"doc{i}", str(d)) for i, d in enumerate(documents)]
        if not items:
            raise ValueError("documents: give at least one document")
        self.ids = [k for k, _ in items]
        self.texts = [v for _, v in items]
        self.k1, self.b = k1, b
        self.tfs = [Counter(tokenize(t)) for t in self.texts]
        self.lengths = [sum(tf.values()) for tf in self.tfs]
        self.avgdl = max(1e-9, sum(self.lengths) / len(self.lengths))
        self.df = Counter(term for tf in self.tfs for term in tf)

    def idf(self, term: str) -> float:
        n, df = len(self.ids), self.df.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every document for ``query``."""
        terms = tokenize(query)
        out = []
        for tf, length in zip(self.tfs, self.lengths, strict=True):
            norm = self.k1 * (1.0 - self.b + self.b * length / self.avgdl)
            out.append(sum(self.idf(t) * tf[t] * (self.k1 + 1.0) / (tf[t] + norm)
                           for t in terms if t in tf))
        return out

    def search(self, query: str, k: int = 3) -> list[tuple[str, float, str]]:
        """The ``k`` best ``(id, score, text)`` with a positive score, best first."""
        ranked = sorted(((s, i) for i, s in enumerate(self.scores(query)) if s > 0),
                        key=lambda p: (-p[0], p[1]))
        return [(self.ids[i], s, self.texts[i]) for s, i in ranked[:k]]


def search_tool(documents: Mapping[str, str] | Sequence[str], *, name: str = "search",
                description: str | None = None, snippet_chars: int = 500) -> Tool:
    """A search tool over ``documents`` (an environment passes its own collection)."""
    index = BM25Index(documents)

    def search(query: str, k: Annotated[int, Field(ge=1, le=10)] = 3) -> str:
        """Search the document collection and return the best matching documents.

        Args:
            query: Keywords to search for.
            k: How many documents to return (1 to 10).
        """
        hits = index.search(query, k)
        if not hits:
            return f"No document matches {query!r}; try other keywords."
        parts = []
        for rank, (doc_id, score, text) in enumerate(hits, 1):
            snippet = text if len(text) <= snippet_chars else text[: snippet_chars - 3] + "..."
            parts.append(f"[{rank}] {doc_id} (score {score:.2f})\n{snippet}")
        return "\n\n".join(parts)

    return tool(name=name, description=description, timeout_s=10.0,
                example={"query": "capital of France"})(search)


def builtin_docs() -> dict[str, str]:
    """``{name: docstring}`` of Python's public built-in functions and types."""
    docs = {}
    for key in sorted(dir(builtins)):
        obj = getattr(builtins, key)
        is_exception = isinstance(obj, type) and issubclass(obj, BaseException)
        if key.startswith("_") or not callable(obj) or is_exception:
            continue
        doc = inspect.getdoc(obj)
        if doc:
            docs[key] = doc
    return docs


TOOLS.register("search", search_tool(
    builtin_docs(),
    description="Search the documentation of Python's built-in functions and types and return "
                "the best matching entries.",
))
