"""corebuild.running.download against a real loopback HTTP server that serves small generated
files under the official URL paths and answers like a static file server / release CDN: 200 with
Content-Length, 206 + Content-Range for `Range: bytes=N-`, 416 past the end, 404 with a body, a
302 from the GitHub release path to its CDN path, and a mode that closes the connection mid-body."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from corebuild.errors import ModelUnavailableError
from corebuild.running import download as dl
from corebuild.running.download import Artifact, artifacts_for, download, plan_text

SAM_PATH = "/segment_anything/sam_vit_b_01ec64.pth"
ZIP_PATH = "/JaidedAI/EasyOCR/releases/download/v1.3/english_g2.zip"
CDN_PATH = "/github-production-release-asset/english_g2.zip"  # where the release path redirects


class Server:
    """Files by path; `cut_next`: the next N GETs stop after `cut_at` body bytes and close."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_next, self.cut_at = 0, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=()):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path, rng = urlsplit(self.path).path, self.headers.get("Range")
                outer.requests.append((path, rng))
                if path in outer.redirects:
                    return self._send(302, b"", [("Location", outer.redirects[path])])
                if path not in outer.files:
                    return self._send(404, b"Not Found", [("Content-Type", "text/plain")])
                data, status, headers = outer.files[path], 200, [("Accept-Ranges", "bytes")]
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m:
                    start = int(m.group(1))
                    if start >= len(data):
                        return self._send(416, b"", [("Content-Range", f"bytes */{len(data)}")])
                    headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
                    data, status = data[start:], 206
                if outer.cut_next:
                    outer.cut_next -= 1
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers:
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data[: outer.cut_at])
                    self.wfile.flush()
                    self.close_connection = True  # then the socket closes mid-body
                    return
                self._send(status, data, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """A proxy set on the test machine must not intercept the loopback server."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def sam_artifact(server: Server, data: bytes, digest: str | None = None) -> Artifact:
    server.files[SAM_PATH] = data
    return Artifact("sam_vit_b_01ec64.pth", "sam", server.base + SAM_PATH, len(data),
                    digest or "sha256:" + hashlib.sha256(data).hexdigest(), None, "sam")


def zipped(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, data)
    return buf.getvalue()


def leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.rglob("*") if p.is_file())


def test_installs_a_file_and_a_zip_member_after_checking_their_digests(server, tmp_path):
    weights, pth = b"sam weights " * 5000, b"easyocr english_g2 " * 3000
    server.files[CDN_PATH] = zipped("english_g2.pth", pth)
    server.redirects[ZIP_PATH] = CDN_PATH  # like GitHub: release URL -> CDN
    arts = [
        sam_artifact(server, weights),
        Artifact("english_g2.pth", "easyocr", server.base + ZIP_PATH, None, "md5:" + hashlib.md5(pth).hexdigest(), "zip:english_g2.pth", "easyocr"),
    ]
    lines: list[str] = []
    paths = download(arts, tmp_path, progress=lines.append, retry_wait=0)
    assert paths == [tmp_path / "sam" / "sam_vit_b_01ec64.pth", tmp_path / "easyocr" / "english_g2.pth"]
    assert paths[0].read_bytes() == weights and paths[1].read_bytes() == pth
    assert leftovers(tmp_path) == ["english_g2.pth", "sam_vit_b_01ec64.pth"]  # no .part, no zip left
    assert any("md5 verified" in line for line in lines) and any("sha256 verified" in line for line in lines)


def test_skips_an_artifact_installed_with_the_right_digest(server, tmp_path):
    art = sam_artifact(server, b"x" * 1000)
    download([art], tmp_path, progress=lambda s: None)
    server.requests.clear()
    lines: list[str] = []
    assert download([art], tmp_path, progress=lines.append) == [art.dest(tmp_path)]
    assert server.requests == [] and "installed already" in lines[0]
    art.dest(tmp_path).write_bytes(b"y" * 1000)  # same name, wrong content: fetched again
    download([art], tmp_path, progress=lines.append)
    assert art.dest(tmp_path).read_bytes() == b"x" * 1000 and len(server.requests) == 1


def test_wrong_checksum_installs_nothing_and_leaves_no_temp(server, tmp_path):
    art = sam_artifact(server, b"tampered" * 100, digest="sha256:" + "0" * 64)
    with pytest.raises(ModelUnavailableError) as err:
        download([art], tmp_path, progress=lambda s: None)
    msg = str(err.value)
    assert "checksum mismatch" in msg and "sam_vit_b_01ec64.pth" in msg and server.base + SAM_PATH in msg
    assert hashlib.sha256(b"tampered" * 100).hexdigest() in msg
    assert leftovers(tmp_path) == []


def test_zip_member_with_wrong_checksum_installs_nothing(server, tmp_path):
    server.files[ZIP_PATH] = zipped("english_g2.pth", b"not the real weights")
    art = Artifact("english_g2.pth", "easyocr", server.base + ZIP_PATH, None, "md5:" + "0" * 32, "zip:english_g2.pth", "easyocr")
    with pytest.raises(ModelUnavailableError, match="checksum mismatch.*md5"):
        download([art], tmp_path, progress=lambda s: None)
    assert leftovers(tmp_path) == []


def test_cut_download_fails_clearly_then_resumes_with_range(server, tmp_path):
    data = bytes(range(256)) * 400  # 102400 bytes
    art = sam_artifact(server, data)
    server.cut_next, server.cut_at = 1, 30000
    with pytest.raises(ModelUnavailableError) as err:
        download([art], tmp_path, retries=1, progress=lambda s: None)
    msg = str(err.value)
    assert "30000 of 102400 bytes" in msg and "resumes" in msg and server.base + SAM_PATH in msg
    assert leftovers(tmp_path) == ["sam_vit_b_01ec64.pth.part"]  # only the part, nothing installed
    assert download([art], tmp_path, progress=lambda s: None) == [art.dest(tmp_path)]
    assert art.dest(tmp_path).read_bytes() == data
    assert server.ranges(SAM_PATH) == [None, "bytes=30000-"]
    assert leftovers(tmp_path) == ["sam_vit_b_01ec64.pth"]


def test_retries_resume_within_one_call_across_a_redirect(server, tmp_path):
    pth = b"zip member " * 5000
    server.files[CDN_PATH] = zipped("english_g2.pth", pth)
    server.redirects[ZIP_PATH] = CDN_PATH
    server.cut_next, server.cut_at = 1, 1000
    art = Artifact("english_g2.pth", "easyocr", server.base + ZIP_PATH, None, "md5:" + hashlib.md5(pth).hexdigest(), "zip:english_g2.pth", "easyocr")
    download([art], tmp_path, retries=2, retry_wait=0, progress=lambda s: None)
    assert art.dest(tmp_path).read_bytes() == pth
    assert server.ranges(CDN_PATH) == [None, "bytes=1000-"]  # the Range header survived the 302


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = b"abcdefghij" * 1000
    art = sam_artifact(server, data)
    Path(f"{art.dest(tmp_path)}").parent.mkdir(parents=True)
    Path(f"{art.dest(tmp_path)}.part").write_bytes(b"GARBAGE")  # a part the server won't continue
    server.files[SAM_PATH] = data
    orig = server.httpd.RequestHandlerClass.do_GET

    def no_ranges(handler):  # a server without range support: 200 with the whole body
        del handler.headers["Range"]
        orig(handler)

    server.httpd.RequestHandlerClass.do_GET = no_ranges
    download([art], tmp_path, progress=lambda s: None)
    assert art.dest(tmp_path).read_bytes() == data


def test_complete_part_answered_416_is_installed_without_refetching(server, tmp_path):
    data = b"0123456789" * 100
    art = sam_artifact(server, data)
    art.dest(tmp_path).parent.mkdir(parents=True)
    Path(f"{art.dest(tmp_path)}.part").write_bytes(data)
    download([art], tmp_path, progress=lambda s: None)
    assert art.dest(tmp_path).read_bytes() == data and server.ranges(SAM_PATH) == ["bytes=1000-"]


def test_404_names_the_url_and_status(server, tmp_path):
    art = Artifact("sam_vit_l_0b3195.pth", "sam", server.base + "/segment_anything/sam_vit_l_0b3195.pth", None, "sha256:" + "0" * 64, None, "sam")
    with pytest.raises(ModelUnavailableError) as err:
        download([art], tmp_path, progress=lambda s: None)
    msg = str(err.value)
    assert "HTTP 404" in msg and "Not Found" in msg and art.url in msg and "sam_vit_l_0b3195.pth" in msg
    assert leftovers(tmp_path) == [] and len(server.requests) == 1  # a 404 is not retried


def test_unverified_artifact_needs_allow_unverified(server, tmp_path):
    data = b"no published checksum"
    art = sam_artifact(server, data, digest=dl.UNKNOWN_DIGEST)
    with pytest.raises(ModelUnavailableError, match=hashlib.sha256(data).hexdigest()):
        download([art], tmp_path, progress=lambda s: None)
    assert leftovers(tmp_path) == []
    download([art], tmp_path, progress=lambda s: None, allow_unverified=True)
    assert art.dest(tmp_path).read_bytes() == data


def test_plan_text_lists_url_size_destination_and_state(server, tmp_path):
    good = sam_artifact(server, b"w" * 2_500_000)
    other = Artifact("english_g2.pth", "easyocr", server.base + ZIP_PATH, None, "md5:" + "0" * 32, "zip:english_g2.pth", "easyocr")
    bad = Artifact("x.onnx", "ppocr", server.base + "/x.onnx", 10, "sha256:" + "0" * 64, None, "ppocr")
    before = plan_text([good, other], tmp_path).splitlines()
    assert good.url in before[0] and "2.5 MB" in before[0] and str(good.dest(tmp_path)) in before[0] and "[missing]" in before[0]
    assert "size unknown" in before[1] and other.url in before[1]
    assert before[-1] == "to download: 2.5 MB plus 1 file(s) of unknown size"
    download([good], tmp_path, progress=lambda s: None)
    bad.dest(tmp_path).parent.mkdir(parents=True)
    bad.dest(tmp_path).write_bytes(b"whatever")
    after = plan_text([good, bad], tmp_path).splitlines()
    assert after[0].endswith("[installed]") and after[1].endswith("[checksum mismatch]")
    assert server.requests == [(SAM_PATH, None)]  # the plan itself fetches nothing


def test_real_table_covers_the_backends():
    arts = artifacts_for(["easyocr", "sam", "clip", "ppocr"], ["english_g2.pth", "craft_mlt_25k.pth"])
    assert [a.name for a in arts if a.backend == "easyocr"] == ["craft_mlt_25k.pth", "english_g2.pth"]
    assert {a.backend for a in arts} == {"easyocr", "sam", "clip", "ppocr"}
    for a in arts:
        assert a.url.startswith("https://") and a.verified and a.dest("m") == Path("m", a.subdir, a.name)
    with pytest.raises(Exception, match="no easyocr weights file"):
        artifacts_for(["easyocr"], ["nope.pth"])


def test_pinned_easyocr_urls_and_md5s_match_easyocr_and_the_backend():
    spec = importlib.util.find_spec("easyocr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("easyocr not installed")
    # easyocr/config.py loaded alone: `import easyocr.config` would import torch first (slow)
    path = Path(list(spec.submodule_search_locations)[0], "config.py")
    cfg_spec = importlib.util.spec_from_file_location("_easyocr_config", path)
    cfg = importlib.util.module_from_spec(cfg_spec)
    cfg_spec.loader.exec_module(cfg)
    theirs = {m["filename"]: (m["url"], m["md5sum"]) for m in cfg.detection_models.values()}
    theirs.update({m["filename"]: (m["url"], m["md5sum"]) for gen in cfg.recognition_models.values() for m in gen.values()})
    from corebuild.stages.ocr.easyocr_backend import MODEL_URLS

    assert set(dl.EASYOCR_FILES) == set(MODEL_URLS)
    for name in dl.EASYOCR_FILES:
        art = dl.easyocr_artifact(name)
        assert (art.url, art.digest) == (theirs[name][0], "md5:" + theirs[name][1]) == (MODEL_URLS[name], art.digest)
        assert art.unpack == f"zip:{name}"


def test_messages_redact_secret_query_values(server, tmp_path):
    art = Artifact("a.pth", "sam", server.base + "/missing.pth?token=s3cr3t-value-123", None, "sha256:" + "0" * 64, None, "sam")
    lines: list[str] = []
    with pytest.raises(ModelUnavailableError) as err:
        download([art], tmp_path, progress=lines.append)
    assert "HTTP 404" in str(err.value)
    assert "s3cr3t" not in str(err.value) + "".join(lines) + plan_text([art], tmp_path)


def test_honours_the_proxy_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.base)  # the loopback server acts as the proxy
    data = b"through the proxy"
    server.files[SAM_PATH] = data
    art = Artifact("sam_vit_b_01ec64.pth", "sam", "http://dl.fbaipublicfiles.com" + SAM_PATH, None,
                   "sha256:" + hashlib.sha256(data).hexdigest(), None, "sam")
    download([art], tmp_path, progress=lambda s: None)
    assert art.dest(tmp_path).read_bytes() == data and server.ranges(SAM_PATH) == [None]
