from __future__ import annotations

import math

import pytest
from agentrl.tools.search import BM25Index, builtin_docs, search_tool, tokenize

from agentrl.tool import call_tool

DOCS = {
    "paris": "Paris is the capital and largest city of France.",
    "rome": "Rome is the capital city of Italy. Rome has the Colosseum.",
    "python": "Python is a programming language. Python code is readable.",
}


def test_tokenize_drops_stop_words_and_punctuation():
    assert tokenize("What is the Capital of FRANCE?") == ["capital", "france"]


def test_bm25_matches_a_hand_computed_score():
    index = BM25Index(DOCS)
    n, df = 3, 1
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    lengths = [len(tokenize(t)) for t in DOCS.values()]
    avgdl = sum(lengths) / 3
    tf, dl = 2, lengths[1]  # "rome" twice in the rome document
    expected = idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl))
    assert index.scores("rome") == pytest.approx([0.0, expected, 0.0])


def test_search_ranks_and_formats():
    hits = BM25Index(DOCS).search("capital of Italy", k=2)
    assert [h[0] for h in hits] == ["rome", "paris"]
    assert BM25Index(DOCS).search("zebra") == []
    find = search_tool(DOCS, name="facts")
    assert find.name == "facts"
    out = find.call({"query": "capital of Italy", "k": 1}).output
    assert out.startswith("[1] rome (score ") and "Colosseum" in out and "paris" not in out
    assert find.call({"query": "zebra"}).output == "No document matches 'zebra'; try other keywords."
    assert "less than or equal to 10" in find.call({"query": "x", "k": 11}).error
    assert BM25Index(["a b", "c d"]).ids == ["doc0", "doc1"]
    with pytest.raises(ValueError, match="documents: give at least one document"):
        BM25Index({})


def test_registered_search_covers_python_builtins():
    docs = builtin_docs()
    assert "len" in docs and "sorted" in docs and "ValueError" not in docs
    out = call_tool("search", {"query": "sorted new list ascending order", "k": 3}).output
    assert "[1] sorted" in out
