"""`corebuild stats`: CVG-Text's text measures for a build, to compare with theirs
(mean 126 tokens, type-token ratio 0.76, mean inter-text similarity 0.17)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
CVG_TEXT = {"mean_tokens": 126.0, "type_token_ratio": 0.76, "mean_similarity": 0.17}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def text_stats(texts: Sequence[str], max_pairs_texts: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean tokens per text, mean per-text type-token ratio, and the mean pairwise cosine
    similarity of TF-IDF vectors (on a seeded sample of at most `max_pairs_texts` texts)."""
    toks = [tokens(t) for t in texts if t]
    if not toks:
        return {"texts": 0, "mean_tokens": float("nan"), "type_token_ratio": float("nan"), "mean_similarity": float("nan")}
    mean_tokens = float(np.mean([len(t) for t in toks]))
    ttr = float(np.mean([len(set(t)) / len(t) for t in toks if t]))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(toks), size=min(len(toks), max_pairs_texts), replace=False)
    sample = [toks[i] for i in sorted(idx)]
    vocab = {w: i for i, w in enumerate(sorted({w for t in sample for w in t}))}
    df = Counter(w for t in sample for w in set(t))
    idf = np.array([np.log((1 + len(sample)) / (1 + df[w])) + 1 for w in sorted(vocab)])
    m = np.zeros((len(sample), len(vocab)))
    for r, t in enumerate(sample):
        for w, c in Counter(t).items():
            m[r, vocab[w]] = c
    m *= idf
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    n = len(sample)
    sim = float((m @ m.T).sum() - n) / (n * (n - 1)) if n > 1 else float("nan")
    return {"texts": len(toks), "mean_tokens": mean_tokens, "type_token_ratio": ttr, "mean_similarity": sim}


def build_texts(storage, region_prefix: str) -> list[str]:
    texts = []
    from corebuild.dataset.reader import listed_shards
    from corebuild.shards.storage import open_parquet

    for name in listed_shards(storage, region_prefix):  # only committed shards: not a killed attempt's leftovers
        t = open_parquet(storage, name).read(columns=["status", "description"], use_threads=False).to_pydict()
        texts += [d for s, d in zip(t["status"], t["description"]) if s == "kept" and d]
    return texts


def build_coverage(storage, region_prefix: str) -> dict[str, Any]:
    """Kept rows by OCR coverage (full / partial / none) and, per language no reader read, its rows."""
    from collections import Counter

    from corebuild.dataset.reader import listed_shards
    from corebuild.shards.manifest import COVERAGE_COLUMNS, coverage_of
    from corebuild.shards.storage import open_parquet

    kinds, unread = Counter(), Counter()
    for name in listed_shards(storage, region_prefix):
        pf = open_parquet(storage, name)
        cols = ["status"] + [c for c in COVERAGE_COLUMNS if c in pf.schema_arrow.names]
        t = pf.read(columns=cols, use_threads=False).to_pydict()
        nones = [None] * len(t["status"])
        for st, r, u in zip(t["status"], t.get("ocr_languages_read", nones), t.get("ocr_languages_unread", nones)):
            if st == "kept":
                kinds[coverage_of(r, u)] += 1
                unread.update(u or ())
    return {"kinds": dict(kinds), "unread": dict(sorted(unread.items()))}


def format_coverage(c: dict[str, Any]) -> str:
    total = sum(c["kinds"].values())
    lines = ["OCR coverage of kept rows (every language the region needs read / some / none):"]
    for k in ("full", "partial", "none", "unrecorded"):
        if k in c["kinds"] or k != "unrecorded":
            n = c["kinds"].get(k, 0)
            lines.append(f"  {k:<11} {n:>8} {n / total if total else 0:>7.1%}")
    if c["unread"]:
        lines.append("  unread here: " + ", ".join(f"{code} ({n} rows)" for code, n in c["unread"].items()))
    return "\n".join(lines)


def format_stats(s: dict[str, float]) -> str:
    lines = [f"{'measure':<18} {'this build':>10} {'CVG-Text':>9}", f"{'texts':<18} {s['texts']:>10}"]
    for k in ("mean_tokens", "type_token_ratio", "mean_similarity"):
        lines.append(f"{k:<18} {s[k]:>10.3f} {CVG_TEXT[k]:>9.2f}")
    return "\n".join(lines)
