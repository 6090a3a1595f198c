"""The accuracy metrics the quality gate reads (engine.pilot.accuracy), against hand-worked values.

Each expected value is worked out in the comment above it. Definitions:

* normalize (SQuAD v1.1's ``normalize_answer``): lower-case, delete ASCII punctuation, drop the
  whole words a/an/the, collapse whitespace;
* exact match: normalized strings equal;
* contains: the normalized reference occurs as whole words in the normalized output;
* token F1 (SQuAD): overlap counted with multiplicity, P = overlap/len(output),
  R = overlap/len(reference), F1 = 2PR/(P+R); two empty token lists agree (1.0);
* ROUGE-L (Lin 2004, beta = 1): P = LCS/len(output), R = LCS/len(baseline), F = 2PR/(P+R),
  over lower-cased letter/digit tokens, Porter-stemmed (as rouge_score with use_stemmer=True);
* cosine: the dot product of unit-length sentence embeddings.

None of these needs the model: they are pure functions (the embedder is a stub here).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.pilot.accuracy import (
    Embedder,
    contains_match,
    exact_match,
    normalize,
    rouge_l,
    token_f1,
)

# --- normalize -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    # lower -> "the cat, sat!  on a mat." ; punctuation -> "the cat sat  on a mat" ;
    # articles -> " cat sat  on   mat" ; whitespace -> "cat sat on mat"
    ("The Cat, sat!  on A mat.", "cat sat on mat"),
    # articles go only as whole words: "theory", "anthem", "bathe" keep their letters
    ("Theory, an anthem: bathe the A", "theory anthem bathe"),
    # punctuation is deleted, not replaced by a space (as SQuAD): don't -> dont, 3.14 -> 314
    ("Don't round 3.14", "dont round 314"),
    ("  \t\n ", ""),
    ("?!...", ""),           # punctuation only -> nothing
    ("The a an", ""),        # articles only -> nothing
    ("", ""),
    # unicode letters are lower-cased and kept
    ("Café  ÜBER München", "café über münchen"),
    # only ASCII punctuation is deleted (string.punctuation, as SQuAD's script): « » stay
    ("«Paris»", "«paris»"),
])
def test_normalize_is_squad_style(text: str, expected: str) -> None:
    assert normalize(text) == expected


# --- exact match -----------------------------------------------------------------------


@pytest.mark.parametrize(("output", "reference", "expected"), [
    # both normalize to "answer is paris"
    ("The answer is Paris.", "answer is  PARIS", 1.0),
    # "paris" != "paris france"
    ("Paris", "Paris, France", 0.0),
    ("", "", 1.0),           # "" == ""
    ("", "Paris", 0.0),      # "" != "paris"
    ("Paris", "", 0.0),
    ("!!!", "...", 1.0),     # both normalize to "" (SQuAD scores this 1)
    ("Ünïcode", "ÜNÏCODE", 1.0),  # str.lower() handles non-ASCII letters
    # lower(), not casefold() (as SQuAD): "straße" != "strasse"
    ("Straße", "STRASSE", 0.0),
])
def test_exact_match(output: str, reference: str, expected: float) -> None:
    assert exact_match(output, reference) == expected


# --- contains --------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "reference", "expected"), [
    # output -> "i think answer is paris france"; " paris " is in it
    ("I think the answer is Paris, France.", "paris", 1.0),
    # output -> "answer new york city"; "new york" occurs as two whole words
    ("The answer: New York City", "New York", 1.0),
    # "parisian food" has "paris" only inside a word: not a match
    ("Parisian food", "Paris", 0.0),
    # the words must be adjacent and in order: "york new" does not contain "new york"
    ("York, New", "new york", 0.0),
    # the reference alone is contained (start and end of string both count as boundaries)
    ("Paris", "Paris", 1.0),
    # punctuation in the reference is normalized away too: "314" in "pi is 314"
    ("pi is 3.14", "3.14", 1.0),
    # regex metacharacters that survive normalization are literal: "«x»" is not a pattern
    ("say «x» now", "«x»", 1.0),
    ("say x now", "«x»", 0.0),
    ("Die Antwort ist München.", "münchen", 1.0),   # unicode
    ("", "Paris", 0.0),      # nothing contains "paris"
    # an empty reference (or one that normalizes to nothing) is contained only in an output
    # that normalizes to nothing as well, so that an exact match always contains
    ("", "", 1.0),
    ("!!!", "?", 1.0),
    ("Paris", "", 0.0),
    ("Paris", "the", 0.0),
])
def test_contains_match(output: str, reference: str, expected: float) -> None:
    assert contains_match(output, reference) == expected


# --- token F1 --------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "reference", "expected"), [
    # out [cat, sat, on, mat] (4), ref [cat, on, mat] (3), overlap 3
    # P = 3/4, R = 3/3 = 1, F1 = 2 * 3/4 * 1 / (3/4 + 1) = 1.5 / 1.75 = 6/7
    ("the cat sat on the mat", "a cat on a mat", 6 / 7),
    # repeated tokens count with multiplicity: out {paris: 3}, ref {paris: 1}, overlap min = 1
    # P = 1/3, R = 1/1, F1 = 2 * 1/3 / (4/3) = 1/2
    ("Paris Paris Paris", "Paris", 0.5),
    # out {x:1, y:2, z:1} (4), ref {y:3, w:1} (4), overlap min(2, 3) = 2
    # P = 2/4, R = 2/4, F1 = 1/2
    ("x y y z", "y y y w", 0.5),
    # order does not matter: overlap 2 of 2 both ways -> 1
    ("two one", "one two", 1.0),
    ("red", "blue", 0.0),    # overlap 0 -> 0
    ("", "", 1.0),           # both token lists empty: they agree (SQuAD v2: int(gold == pred))
    ("!!!", "the ...", 1.0),  # both normalize to nothing
    ("", "Paris", 0.0),      # one side empty -> 0
    ("Paris", "", 0.0),
    ("?", "Paris", 0.0),     # punctuation only vs a word -> 0
    # unicode: out "ответ москва" [ответ, москва] (2), ref [москва] (1), overlap 1
    # P = 1/2, R = 1, F1 = 2 * 1/2 / (3/2) = 2/3
    ("Ответ: Москва!", "москва", 2 / 3),
])
def test_token_f1(output: str, reference: str, expected: float) -> None:
    assert token_f1(output, reference) == pytest.approx(expected, abs=1e-12)


# --- ROUGE-L ---------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "baseline", "expected"), [
    # out [one, three, five, six] (4), base [one, two, three, four, five] (5)
    # LCS = one three five = 3; P = 3/4, R = 3/5, F = 2 * 0.45 / 1.35 = 2/3
    ("one three five six", "one two three four five", 2 / 3),
    # Lin 2004's example, stemmed: out [the, gunman, kill, polic], base [polic, kill, the,
    # gunman]; LCS = "the gunman" = 2 (ROUGE-L keeps "the"); P = R = 2/4, F = 1/2
    ("the gunman killed police", "police killed the gunman", 0.5),
    # order matters (token F1 would give 1): LCS = 1, P = R = 1/2, F = 1/2
    ("two one", "one two", 0.5),
    # repeated tokens: LCS of [yes] and [yes, yes, yes] = 1; P = 1/1, R = 1/3,
    # F = 2 * 1/3 / (4/3) = 1/2
    ("yes", "yes yes yes", 0.5),
    # LCS of [yes, no, yes] and [yes, yes] = 2; P = 2/3, R = 2/2, F = (4/3) / (5/3) = 4/5
    ("yes no yes", "yes yes", 0.8),
    # Porter stemming: out [the, cat, are, run] (cats -> cat, running -> run; "are" has 3
    # letters, not stemmed), base [the, cat, is, run]; LCS = the cat run = 3, P = R = 3/4
    ("The cats are running", "the cat is running", 0.75),
    ("Hello, World!", "hello world", 1.0),   # case and punctuation are not tokens
    ("red", "blue", 0.0),                    # LCS 0
    ("", "", 1.0),           # no tokens on either side: the outputs agree
    ("   ", "", 1.0),
    ("!!!", "?", 1.0),       # punctuation only: no tokens on either side
    ("", "hello", 0.0),      # one side has no tokens -> 0
    ("hello", "", 0.0),
    ("...", "hello", 0.0),
    # unicode letters are tokens (rouge_score's default tokenizer drops them and gave 0 here)
    ("привет мир", "привет мир", 1.0),
    # [привет, мир] vs [привет, друг]: LCS 1, P = R = 1/2
    ("привет мир", "привет друг", 0.5),
    # out [北京, 是, 首都] (3), base [北京, 首都] (2): LCS 2, P = 2/3, R = 1, F = 4/5
    ("北京 是 首都", "北京，首都", 0.8),
    # "café" is one token, not "caf": out [café, au, lait], base [cafe, au, lait],
    # LCS = au lait = 2, P = R = 2/3
    ("café au lait", "cafe au lait", 2 / 3),
])
def test_rouge_l(output: str, baseline: str, expected: float) -> None:
    value = rouge_l(output, baseline)
    assert type(value) is float
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("output", "baseline"), [
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumped over a fox!"),
    ("It's 42 -- isn't it? Running, runs, ran.", "it is forty-two; run runner running"),
    ("snake_case and CamelCase", "snake case camel case"),
])
def test_rouge_l_on_ascii_text_equals_rouge_score(output: str, baseline: str) -> None:
    """On ASCII text the tokens are rouge_score's own (stemmed), so its scores are unchanged."""
    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert rouge_l(output, baseline) == pytest.approx(
        reference.score(baseline, output)["rougeL"].fmeasure, abs=1e-12)


# --- properties every metric keeps, on arbitrary unicode text ---------------------------

METRICS = (exact_match, contains_match, token_f1, rouge_l)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_identical_text_scores_1_on_every_metric(text: str) -> None:
    for metric in METRICS:
        assert metric(text, text) == 1.0, metric.__name__


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_metrics_are_in_0_1_and_exact_implies_contains(a: str, b: str) -> None:
    for metric in METRICS:
        assert 0.0 <= metric(a, b) <= 1.0, metric.__name__
    if exact_match(a, b):
        assert contains_match(a, b) == 1.0 and token_f1(a, b) == 1.0
    assert token_f1(a, b) == pytest.approx(token_f1(b, a))  # F1 is symmetric
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))    # so is the F-measure (beta = 1)


# --- embedding cosine (base_cosine) -----------------------------------------------------


class StubSentenceModel:
    """SentenceTransformer.encode for fixed 2-d vectors; records how it was called."""

    VECTORS = {"a": (1.0, 0.0), "b": (0.0, 2.0), "c": (3.0, 4.0), "d": (-1.0, 0.0)}

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def encode(self, texts, normalize_embeddings=False, convert_to_tensor=False):
        import torch

        self.calls.append({"texts": list(texts), "normalize": normalize_embeddings,
                           "tensor": convert_to_tensor})
        vectors = torch.tensor([self.VECTORS[t] for t in texts])
        if normalize_embeddings:
            vectors = vectors / vectors.norm(dim=1, keepdim=True)
        return vectors


def stub_embedder() -> tuple[Embedder, StubSentenceModel]:
    embedder = object.__new__(Embedder)  # skip loading all-MiniLM-L6-v2
    embedder.model = StubSentenceModel()
    return embedder, embedder.model


def test_cosine_pairs_compares_each_output_with_its_own_baseline() -> None:
    embedder, model = stub_embedder()
    # unit vectors: a = (1, 0), b = (0, 2)/2 = (0, 1), c = (3, 4)/5 = (0.6, 0.8), d = (-1, 0)
    # pairs (a, c): 1*0.6 + 0*0.8 = 0.6 ; (b, c): 0*0.6 + 1*0.8 = 0.8 ; (a, a): 1 ;
    # (a, b): 0 ; (a, d): -1
    values = embedder.cosine_pairs(["a", "b", "a", "a", "a"], ["c", "c", "a", "b", "d"])
    assert values == pytest.approx([0.6, 0.8, 1.0, 0.0, -1.0], abs=1e-6)
    assert all(type(v) is float for v in values)
    # the dot product is a cosine only because both sides were asked for unit vectors
    assert [c["normalize"] for c in model.calls] == [True, True]


def test_cosine_pairs_of_nothing_encodes_nothing() -> None:
    embedder, model = stub_embedder()
    assert embedder.cosine_pairs([], []) == []
    assert model.calls == []
