"""`corebuild eval retrieval`: a text→aerial retrieval baseline on a split of one region build.

A small dual encoder is trained on the split's `train` rows: descriptions (hashed word and bigram
bag → MLP) and aerial images (a small CNN on downscaled aerials) into one embedding space, with
the symmetric CLIP loss (InfoNCE both ways, learned temperature). With `--init` an open_clip
ViT-B-32 checkpoint (a local file; nothing is downloaded) replaces both encoders and is
fine-tuned the same way (`--epochs 0`: zero-shot).

Reported on `val` and `test`, each split its own gallery (every row's description queries all
the split's aerials): Recall@1/5/10, median rank and chance (K / candidates for Recall@K,
(N+1)/2 for the median rank). Ties count against the query: the rank of the true aerial is 1 +
the number of other aerials scoring at least as high, so a model that scores everything the same
gets the worst rank, not the best. On the same model, the `no_sign_text` variant queries with the
descriptions stripped of sign text (quoted phrases and the row's OCR texts): what OCR evidence
buys. When the build has map images (`map_image`), a second model is trained text→map.

Output: a table, and `<build>/eval/retrieval-<name>.json` (config, split file sha256, code
version, metrics and chance per split and variant, timings).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional, Sequence

import numpy as np

from corebuild.errors import ConfigError, CorebuildError, ModelUnavailableError

KS = (1, 5, 10)
EVAL_SPLITS = ("val", "test")
CLIP_ARCH = "ViT-B-32"
NO_MAP = "no map modality in this build"
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|„[^“”]*[“”]|«[^»]*»")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class RetrievalConfig:
    epochs: int = 20
    seed: int = 0
    dim: int = 128  # shared embedding size
    hidden: int = 256  # text bag width
    width: int = 16  # CNN channels of the first layer (then 2x, 4x, 4x)
    text_buckets: int = 1 << 13  # hashed word + bigram features
    image_px: int = 48  # aerials are downscaled to image_px x image_px (open_clip: its own size)
    batch_size: int = 64
    lr: float = 2e-3  # open_clip fine-tuning uses clip_lr
    clip_lr: float = 1e-5
    weight_decay: float = 1e-4
    device: str = "cpu"
    threads: int = 1  # torch CPU threads: 1 gives the same numbers on any machine (and small convs gain little)
    init: Optional[str] = None  # open_clip weights file (of init_arch)
    init_arch: str = CLIP_ARCH


# --- metrics ------------------------------------------------------------------------------------


def ranks_from_similarity(sim: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of the true candidate of each query: query i's true candidate is column i.
    Ties count against the query (1 + the other candidates scoring >= the true one)."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be square (query i ↔ candidate i), got shape {sim.shape}")
    true = np.diag(sim)[:, None]
    return (sim >= true).sum(axis=1).astype(np.int64)  # counts the true candidate itself: 1 + others


def chance(candidates: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected metrics of a random ranking over `candidates` aerials."""
    out = {f"recall@{k}": min(k, candidates) / candidates for k in ks}
    out["median_rank"] = (candidates + 1) / 2
    return out


def retrieval_metrics(ranks: np.ndarray, candidates: int, ks: Sequence[int] = KS) -> dict[str, Any]:
    ranks = np.asarray(ranks)
    out: dict[str, Any] = {"queries": int(ranks.size), "candidates": int(candidates)}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(ranks <= k))
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["chance"] = chance(candidates, ks)
    return out


def metrics_from_similarity(sim: np.ndarray, ks: Sequence[int] = KS) -> dict[str, Any]:
    return retrieval_metrics(ranks_from_similarity(sim), sim.shape[1], ks)


# --- sign text ablation ---------------------------------------------------------------------------


def strip_sign_text(description: str, ocr_texts: Sequence[str]) -> str:
    """`description` without sign text: quoted phrases (any quote style) and the row's OCR texts,
    as whole words, case-insensitive from 3 characters on. One-character OCR texts are left
    unless quoted: a sign reading "A" must not eat the article. The words around the sign text
    ("a sign reading ... on the left") stay."""
    text = _QUOTED.sub(" ", description)
    for t in sorted({t.strip() for t in ocr_texts if t and len(t.strip()) >= 2}, key=len, reverse=True):
        pattern = r"(?<!\w)" + re.escape(t) + r"(?!\w)"
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE if len(t) >= 3 else 0)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _ocr_texts(ocr: Any) -> list[str]:
    return [o.get("text") or "" for o in (ocr or []) if isinstance(o, dict)]


# --- data -----------------------------------------------------------------------------------------


@dataclass
class Rows:
    """Kept rows of the split, in build order, with images decoded and downscaled."""

    sample_ids: list[str]
    split: np.ndarray  # "train" / "val" / "test"
    texts: list[str]
    texts_no_sign: list[str]
    aerial: np.ndarray  # uint8 (N, 3, px, px)
    map_image: Optional[np.ndarray]  # uint8 (N, 3, px, px), zeros where has_map is False
    has_map: np.ndarray  # bool (N,)
    counts: dict[str, int] = field(default_factory=dict)

    def index(self, split: str, need_map: bool = False) -> np.ndarray:
        sel = self.split == split
        return np.flatnonzero(sel & self.has_map if need_map else sel)


def _pixels(data: Optional[bytes], px: int) -> Optional[np.ndarray]:
    from PIL import Image

    if not data:
        return None
    try:
        img = Image.open(io.BytesIO(data))
        img = img.convert("RGB").resize((px, px), Image.BICUBIC, reducing_gap=3.0)
    except Exception:  # unreadable image: the row is dropped and counted
        return None
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def read_rows(build_url: str, splits: dict[str, set[str]], px: int) -> Rows:
    """The build's kept rows that the split assigns to train/val/test, images at `px`."""
    from corebuild.dataset.reader import open_build
    from corebuild.dataset.torch_data import CorebuildDataset
    from corebuild.shards.storage import open_parquet

    build = open_build(build_url)
    names = build.shard_names()
    if not names:
        raise CorebuildError(f"{build.url}: no kept rows (its manifest lists no shards)")
    have = set(open_parquet(build.storage, names[0]).schema_arrow.names)
    if "aerial_image" not in have:
        raise CorebuildError(f"{build.url}: no aerial images (the shards have no aerial_image column): nothing to retrieve")
    columns = ["sample_id", "description"] + [c for c in ("ocr", "aerial_image", "map_image") if c in have]
    ds = CorebuildDataset(build.shard_urls(), columns=columns, kept_only=True, decode="bytes")
    where = {sid: s for s, ids in splits.items() for sid in ids}
    ids: list[str] = []
    split: list[str] = []
    texts: list[str] = []
    ablated: list[str] = []
    aerial: list[np.ndarray] = []
    maps: list[Optional[np.ndarray]] = []
    counts = {"kept": 0, "kept_with_aerial": 0, "in_split": 0, "no_description": 0, "no_aerial": 0}
    for sample in ds:
        row = sample.row
        counts["kept"] += 1
        if row.get("aerial_image"):
            counts["kept_with_aerial"] += 1
        s = where.get(row["sample_id"])
        if s is None:
            continue
        counts["in_split"] += 1
        if not row.get("description"):
            counts["no_description"] += 1
            continue
        img = _pixels(row.get("aerial_image"), px)
        if img is None:
            counts["no_aerial"] += 1
            continue
        ids.append(row["sample_id"])
        split.append(s)
        texts.append(row["description"])
        ablated.append(strip_sign_text(row["description"], _ocr_texts(row.get("ocr"))))
        aerial.append(img)
        maps.append(_pixels(row.get("map_image"), px))
    if counts["kept"] == 0:
        raise CorebuildError(f"{build.url}: no kept rows in its {len(names)} shard(s): nothing to train or evaluate on")
    if counts["kept_with_aerial"] == 0:
        raise CorebuildError(f"{build.url}: no aerial images (aerial_image is null in all {counts['kept']} kept rows): nothing to retrieve")
    has_map = np.array([m is not None for m in maps], dtype=bool)
    map_arr = None
    if has_map.any():
        blank = np.zeros((3, px, px), np.uint8)
        map_arr = np.stack([m if m is not None else blank for m in maps])
    return Rows(
        ids, np.array(split, dtype=object), texts, ablated,
        np.stack(aerial) if aerial else np.zeros((0, 3, px, px), np.uint8), map_arr, has_map, counts,
    )


# --- models ---------------------------------------------------------------------------------------


def text_features(text: str, buckets: int) -> tuple[list[int], list[float]]:
    """Hashed word unigrams and bigrams (crc32: the same on every run and machine), with
    sublinear counts, L2-normalised."""
    words = _WORD.findall(text.lower())
    grams = [f"w {w}" for w in words] + [f"b {a} {b}" for a, b in zip(words, words[1:])]
    counts: dict[int, int] = {}
    for g in grams:
        h = zlib.crc32(g.encode()) % buckets
        counts[h] = counts.get(h, 0) + 1
    if not counts:
        return [0], [0.0]
    keys = sorted(counts)
    vals = [1.0 + math.log(counts[k]) for k in keys]
    norm = math.sqrt(sum(v * v for v in vals))
    return keys, [v / norm for v in vals]


def _small_model(cfg: RetrievalConfig):
    import torch
    from torch import nn

    class TextEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(cfg.text_buckets, cfg.hidden, mode="sum")
            self.head = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.dim))
            self._cache: dict[str, tuple[list[int], list[float]]] = {}

        def forward(self, texts: Sequence[str]) -> "torch.Tensor":
            idx: list[int] = []
            wts: list[float] = []
            offsets: list[int] = []
            for t in texts:
                if t not in self._cache:
                    self._cache[t] = text_features(t, cfg.text_buckets)
                k, w = self._cache[t]
                offsets.append(len(idx))
                idx += k
                wts += w
            dev = self.bag.weight.device
            return self.head(self.bag(
                torch.tensor(idx, dtype=torch.long, device=dev), torch.tensor(offsets, dtype=torch.long, device=dev),
                per_sample_weights=torch.tensor(wts, dtype=torch.float32, device=dev),
            ))

    class ImageEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = cfg.width
            self.conv = nn.Sequential(
                nn.Conv2d(3, c, 5, stride=2, padding=2), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU(),
                nn.Conv2d(4 * c, 4 * c, 3, stride=1, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU(),
            )
            # Global mean + max (what is there), and a 2x2 grid of means (where: aerials are north-up).
            self.head = nn.Linear(4 * c * (2 + 4), cfg.dim)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            f = self.conv(x.float() / 127.5 - 1.0)
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), nn.functional.adaptive_avg_pool2d(f, 2).flatten(1)], dim=1)
            return self.head(pooled)

    class SmallDualEncoder(nn.Module):
        kind = "small"

        def __init__(self) -> None:
            super().__init__()
            self.text = TextEncoder()
            self.image = ImageEncoder()
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

        def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
            return self.text(texts)

        def encode_image(self, pixels: "torch.Tensor") -> "torch.Tensor":
            return self.image(pixels)

    return SmallDualEncoder()


def check_init(path: Optional[str]) -> None:
    """Fail before any data is read when --init names no file."""
    if path is not None and not os.path.isfile(path):
        raise ModelUnavailableError(
            f"--init {path}: no such file. It must be a local open_clip checkpoint of --init-arch (default {CLIP_ARCH}), e.g. "
            "open_clip_pytorch_model.bin from https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K; nothing is downloaded"
        )


def _clip_model(cfg: RetrievalConfig):
    import torch
    from torch import nn

    check_init(cfg.init)
    try:
        import open_clip
    except ImportError as exc:
        raise ModelUnavailableError(f"--init needs open_clip_torch: pip install 'corebuild[sam]' ({exc})") from None
    # pretrained=None: open_clip never resolves a tag or hub name (that would download).
    if cfg.init_arch not in open_clip.list_models():
        raise ModelUnavailableError(f"--init-arch {cfg.init_arch!r}: not an open_clip architecture")
    model = open_clip.create_model(cfg.init_arch, pretrained=None)
    try:
        open_clip.load_checkpoint(model, cfg.init)
    except Exception as exc:  # truncated file, weights of another architecture, ...
        raise ModelUnavailableError(f"--init {cfg.init}: cannot load it into open_clip {cfg.init_arch}: {exc}") from None
    tokenizer = open_clip.get_tokenizer(cfg.init_arch)
    size = model.visual.image_size
    pcfg = getattr(model.visual, "preprocess_cfg", None) or {}
    mean = torch.tensor(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(pcfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)

    class ClipDualEncoder(nn.Module):
        kind = "open_clip"

        def __init__(self) -> None:
            super().__init__()
            self.clip = model
            self.logit_scale = model.logit_scale  # CLIP's own learned temperature
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.image_px = int(size[0] if isinstance(size, (tuple, list)) else size)

        def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
            # Descriptions longer than the 77-token context are truncated by the tokenizer.
            return self.clip.encode_text(tokenizer(list(texts)).to(self.mean.device))

        def encode_image(self, pixels: "torch.Tensor") -> "torch.Tensor":
            return self.clip.encode_image((pixels.float() / 255.0 - self.mean) / self.std)

    return ClipDualEncoder()


def build_model(cfg: RetrievalConfig):
    return _clip_model(cfg) if cfg.init is not None else _small_model(cfg)


# --- training and evaluation ----------------------------------------------------------------------


@dataclass
class Trained:
    model: Any
    losses: list[float]
    seconds: float


def train(cfg: RetrievalConfig, texts: Sequence[str], images: np.ndarray, model: Any = None) -> Trained:
    """Symmetric InfoNCE over in-batch negatives; seeded, deterministic on CPU."""
    import torch

    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg)
    model = model.to(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr if cfg.init else cfg.lr, weight_decay=cfg.weight_decay)
    pixels = torch.from_numpy(images)
    n = len(texts)
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen).tolist()
        total, seen = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2:  # a batch of one has no negatives (and breaks batch norm)
                continue
            t = torch.nn.functional.normalize(model.encode_text([texts[i] for i in idx]), dim=-1)
            v = torch.nn.functional.normalize(model.encode_image(pixels[idx].to(cfg.device)), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100.0) * t @ v.T
            target = torch.arange(len(idx), device=cfg.device)
            loss = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        losses.append(round(total / max(seen, 1), 5))
    model.eval()
    return Trained(model, losses, time.perf_counter() - t0)


def embed(model: Any, texts: Sequence[str], images: np.ndarray, device: str, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    import torch

    model.eval()
    tx, im = [], []
    with torch.inference_mode():
        for s in range(0, len(texts), batch):
            tx.append(torch.nn.functional.normalize(model.encode_text(list(texts[s : s + batch])), dim=-1).float().cpu())
            im.append(torch.nn.functional.normalize(model.encode_image(torch.from_numpy(images[s : s + batch]).to(device)), dim=-1).float().cpu())
    return torch.cat(tx).numpy(), torch.cat(im).numpy()


def evaluate(model: Any, texts: Sequence[str], images: np.ndarray, device: str) -> Optional[dict[str, Any]]:
    if len(texts) == 0:
        return None
    t, v = embed(model, texts, images, device)
    return metrics_from_similarity(t @ v.T)


def _torch_settings(deterministic: bool, threads: int) -> tuple[bool, int]:
    """Set determinism and CPU threads; returns the previous settings (to restore them)."""
    import torch

    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.set_num_threads(threads)
    return before


def run_modality(cfg: RetrievalConfig, rows: Rows, images: np.ndarray, need_map: bool, model: Any = None) -> dict[str, Any]:
    """Train text→`images` on train rows; metrics on val/test (full and no-sign-text queries)."""
    tr = rows.index("train", need_map)
    trained = train(cfg, [rows.texts[i] for i in tr], images[tr], model)
    t0 = time.perf_counter()
    splits: dict[str, Any] = {}
    for s in EVAL_SPLITS:
        ix = rows.index(s, need_map)
        splits[s] = {
            "full": evaluate(trained.model, [rows.texts[i] for i in ix], images[ix], cfg.device),
            "no_sign_text": evaluate(trained.model, [rows.texts_no_sign[i] for i in ix], images[ix], cfg.device),
        }
    return {
        "train_rows": int(tr.size), "model": trained.model.kind, "losses": trained.losses,
        "splits": splits, "train_seconds": round(trained.seconds, 3), "eval_seconds": round(time.perf_counter() - t0, 3),
    }


def run_retrieval(build_url: str, split_url: str, cfg: RetrievalConfig, name: Optional[str] = None, *, model_factory: Any = None) -> dict[str, Any]:
    """Everything `corebuild eval retrieval` does but printing: returns the report (also written
    to `<build>/eval/retrieval-<name>.json`). `model_factory(cfg)` builds the encoders instead
    of the small model / --init (one per trained modality)."""
    from corebuild.dataset.splits import load_split
    from corebuild.shards.storage import open_storage

    t_start = time.perf_counter()
    name = name or _stem(split_url)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"eval retrieval: name {name!r} must be a plain file name (no '/', not starting with '.')")
    if cfg.epochs < 0 or cfg.batch_size < 2:
        raise ConfigError(f"eval retrieval: --epochs must be >= 0 and the batch size >= 2 (got {cfg.epochs}, {cfg.batch_size})")
    if cfg.threads < 1:
        raise ConfigError(f"eval retrieval: --threads must be >= 1 (got {cfg.threads})")
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"eval retrieval: --device must be cpu or cuda, not {cfg.device!r}")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CorebuildError("eval retrieval: --device cuda, but torch sees no CUDA device")
    if model_factory is None:
        check_init(cfg.init)
    parent, _, base = split_url.rstrip("/").rpartition("/")
    split_bytes = open_storage(parent or ".").read(base)
    if split_bytes is None:
        raise CorebuildError(f"{split_url}: no such splits file (`corebuild splits` writes <out>/splits/<name>.parquet)")
    splits = {s: load_split(split_url, s) for s in ("train",) + EVAL_SPLITS}
    if not splits["train"]:
        raise CorebuildError(f"{split_url}: the train split is empty: nothing to train on (try other --ratios/--block-km/--seed in `corebuild splits`)")
    # open_clip weights load here, before the data: a bad file fails fast. The small model is
    # built in `train`, after the seed.
    factory = model_factory or (_clip_model if cfg.init is not None else None)
    first = factory(cfg) if factory else None
    px = getattr(first, "image_px", None) or cfg.image_px
    cfg = replace(cfg, image_px=px)
    rows = read_rows(build_url, splits, px)
    if rows.index("train").size < 2:
        raise CorebuildError(
            f"{build_url}: {rows.index('train').size} of the {len(splits['train'])} train sample_ids of {split_url} are kept rows "
            "with a description and an aerial image: need at least 2 to train (a splits file of another build?)"
        )
    load_s = time.perf_counter() - t_start

    before = _torch_settings(True, cfg.threads)
    try:
        aerial = run_modality(cfg, rows, rows.aerial, False, first)
        map_result: Any = NO_MAP
        if rows.map_image is not None:
            if rows.index("train", True).size < 2:
                map_result = f"map images on {int(rows.has_map.sum())} rows, under 2 of them in train: not trained"
            else:
                map_result = run_modality(cfg, rows, rows.map_image, True, factory(cfg) if factory else None)
    finally:
        _torch_settings(*before)

    from corebuild.running.provenance import code_version

    report = {
        "command": "corebuild eval retrieval",
        "build": build_url,
        "name": name,
        "split_file": split_url,
        "split_sha256": hashlib.sha256(split_bytes).hexdigest(),
        "code_version": code_version(),
        "config": asdict(cfg),
        "rows": {**rows.counts, **{s: int(rows.index(s).size) for s in ("train",) + EVAL_SPLITS}},
        "split_sizes": {s: len(v) for s, v in splits.items()},
        "tie_rule": "rank = 1 + other candidates scoring >= the true one",
        "aerial": aerial,
        "map": map_result,
        "timings": {"load_seconds": round(load_s, 3), "total_seconds": None},
    }
    report["timings"]["total_seconds"] = round(time.perf_counter() - t_start, 3)
    out = open_storage(build_url.rstrip("/"))
    report["written"] = out.join(f"eval/retrieval-{name}.json")
    out.write(f"eval/retrieval-{name}.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _stem(url: str) -> str:
    base = url.rstrip("/").rpartition("/")[2]
    return base[: -len(".parquet")] if base.endswith(".parquet") else base.rsplit(".", 1)[0]


# --- command line ---------------------------------------------------------------------------------


def format_table(result: dict[str, Any], modality: str) -> list[str]:
    head = f"{'split':<6} {'queries':<13} {'candidates':>10} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'median rank':>12} {'chance R@10':>12} {'chance median':>14}"
    lines = [f"text → {modality}: {result['model']} model, {result['train_rows']} train rows, {result['train_seconds']:.1f} s training", head]
    for s, variants in result["splits"].items():
        for variant, m in variants.items():
            label = "descriptions" if variant == "full" else "no sign text"
            if m is None:
                lines.append(f"{s:<6} {label:<13} {0:>10}  (no rows in this split)")
                continue
            c = m["chance"]
            lines.append(
                f"{s:<6} {label:<13} {m['candidates']:>10} {m['recall@1']:>6.3f} {m['recall@5']:>6.3f} {m['recall@10']:>6.3f} "
                f"{m['median_rank']:>12.1f} {c['recall@10']:>12.3f} {c['median_rank']:>14.1f}"
            )
    test = result["splits"].get("test", {}).get("full")
    if test:
        ratio = test["recall@10"] / test["chance"]["recall@10"]
        lines.append(f"test R@10 {test['recall@10']:.3f} = {ratio:.1f} x chance ({test['chance']['recall@10']:.3f})")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = RetrievalConfig()
    parser.add_argument("build", help="a region build directory (<output>/<region>, local path or gs:// URL)")
    parser.add_argument("--split", required=True, help="a splits file written by `corebuild splits` (<out>/splits/<name>.parquet)")
    parser.add_argument("--name", default=None, help="report name: <build>/eval/retrieval-<name>.json (default: the split file's stem)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs over the train split (default {d.epochs}; 0: no training)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of initialisation and batch order (default {d.seed})")
    parser.add_argument("--init", default=None, metavar="OPEN_CLIP_WEIGHTS",
                        help=f"an open_clip weights file ({CLIP_ARCH} unless --init-arch): fine-tune it instead of the small encoders (never downloaded)")
    parser.add_argument("--init-arch", default=CLIP_ARCH, help=f"open_clip architecture of --init (default {CLIP_ARCH})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=d.device, help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=d.threads, help=f"torch CPU threads (default {d.threads}: the same numbers on any machine)")
    parser.add_argument("--image-px", type=int, default=d.image_px, help=f"aerial side after downscaling, small model (default {d.image_px})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"contrastive batch size (default {d.batch_size})")


def main(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise CorebuildError("eval retrieval trains with PyTorch, which is not installed: pip install 'corebuild[data]'")
    cfg = RetrievalConfig(epochs=args.epochs, seed=args.seed, init=args.init, init_arch=args.init_arch, device=args.device, image_px=args.image_px,
                          batch_size=args.batch_size, threads=args.threads)
    report = run_retrieval(args.build, args.split, cfg, args.name)
    print(f"retrieval baseline on {report['build']} with split {report['split_file']} "
          f"(train {report['rows']['train']}, val {report['rows']['val']}, test {report['rows']['test']} rows; {cfg.epochs} epochs, seed {cfg.seed})")
    for line in format_table(report["aerial"], "aerial"):
        print(line)
    if isinstance(report["map"], dict):
        for line in format_table(report["map"], "map"):
            print(line)
    else:
        print(f"map: {report['map']}")
    print(f"total {report['timings']['total_seconds']:.1f} s; wrote {report['written']}")
    return 0
