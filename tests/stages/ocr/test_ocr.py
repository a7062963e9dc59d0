import pytest

from corebuild.errors import ModelUnavailableError
from corebuild.stages.ocr import OcrConfig, load_ocr, normalize_text


def test_normalize_text_nfc_and_whitespace():
    assert normalize_text("  Cafe\u0301 \t ROMA\n") == "Café ROMA"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="unknown OCR backend 'nope'; known: \\['auto', 'easyocr', 'off', 'rapidocr', 'rapidocr-v5'\\]"):
        load_ocr(OcrConfig(backend="nope"))


def test_huge_images_are_read_at_a_bounded_size_with_boxes_in_original_pixels():
    import io

    from PIL import Image

    from corebuild.synthetic.signs import sign_texture

    big = Image.new("RGB", (6000, 4000), (120, 130, 110))
    big.paste(sign_texture("HUGE BAKERY", (250, 250, 245), (20, 20, 20)).resize((2400, 480)), (1800, 1700))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    [hit] = load_ocr(OcrConfig(max_side=1600)).read(buf.getvalue())
    assert hit.text.replace(" ", "") == "HUGEBAKERY"
    xs, ys = [p[0] for p in hit.box], [p[1] for p in hit.box]
    assert 1700 < min(xs) < 2100 and 3900 < max(xs) < 4400 and 1650 < min(ys) and max(ys) < 2250


def test_an_image_without_text_reads_nothing():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 640), (90, 140, 200)).save(buf, "JPEG")
    assert load_ocr(OcrConfig()).read(buf.getvalue()) == []


def test_grouped_readers_keep_the_more_confident_reading_of_a_box():
    from corebuild.stages.ocr import GroupedOcr, OcrHit

    class Fixed:
        def __init__(self, name, hits):
            self.name, self.model_id, self.hits = name, name, hits

        def read(self, image):
            return self.hits

    box = ((10, 10), (50, 10), (50, 20), (10, 20))
    moved = ((11, 10), (51, 10), (51, 20), (11, 20))
    other = ((100, 10), (140, 10), (140, 20), (100, 20))
    g = GroupedOcr([Fixed("latin", [OcrHit("CAFE", 0.7, box)]), Fixed("ja", [OcrHit("カフェ", 0.9, moved), OcrHit("駅", 0.8, other)])])
    assert [h.text for h in g.read(b"")] == ["カフェ", "駅"] and g.model_id == "latin+ja"


def test_off_backend_reads_nothing_and_says_so_in_every_row(tiny_world, prompts_dir):
    """`--ocr-backend off` goes through load_ocr like any backend; records get empty evidence
    marked off:none, and the template describer still describes them (no signs)."""
    from corebuild.stages.describe import DescribeConfig, load_describer
    from corebuild.stages.ocr import ocr_record
    from corebuild.record import Record, StreetCapture, StreetView
    from corebuild.synthetic.render import Camera, encode, render_street

    engine = load_ocr(OcrConfig(backend="off"), [["ja"], ["en"]])
    assert (engine.name, engine.model_id) == ("off", "none")
    sign = tiny_world.signs[0]
    cx, cy, _ = sign.center
    x, y = cx + sign.normal[0] * 12, cy + sign.normal[1] * 12
    views = tuple(StreetView(h, 90, 0, 640, 640, encode(render_street(tiny_world, Camera(x, y, h)), "jpeg")) for h in (0, 90, 180, 270))
    rec = Record("tiny-s0-0000000", "tiny", 0, 0, 0, 0, street=StreetCapture("t", "p", 0, 0, None, 0, views))
    assert engine.read(views[0].image) == []  # a view with a sign in it still reads as nothing
    rec = ocr_record(rec, engine, OcrConfig(backend="off"))
    assert not rec.failed and rec.ocr == () and rec.ocr_backend == "off:none"
    [out] = load_describer(DescribeConfig(prompts_dir=str(prompts_dir))).describe([rec], {"tiny": {"name": "Tinytown", "country": "ZA"}})
    assert not out.failed and "No legible signs" in out.description.text and "Tinytown, ZA" in out.description.text


def test_off_backend_is_part_of_the_config_hash():
    from corebuild.config import BuildConfig

    on, off = BuildConfig("demo"), BuildConfig("demo", ocr=OcrConfig(backend="off"))
    assert off.content_dict()["ocr"]["backend"] == "off" and on.content_hash() != off.content_hash()


def test_build_with_ocr_off_end_to_end(tmp_path, manifests_dir):
    """The real CLI: preflight, the pipeline and the manifest accept `off` and record it."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from tests.conftest import ROOT

    cmd = [sys.executable, "-m", "corebuild", "build", "--region", "tiny", "--manifests", str(manifests_dir), "--limit", "6",
           "--output", str(tmp_path), "--ocr-backend", "off", "--no-progress"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    assert m["consistent"] and m["counts"]["kept"] == 6 and m["counts"]["sampled"] == m["counts"]["rows"]
    assert m["models"]["ocr"] == "off:none" and m["config"]["ocr"]["backend"] == "off"
    rows = [row for f in (tmp_path / "tiny" / "shards").glob("*.parquet") for row in pq.read_table(f).to_pylist()]
    kept = [row for row in rows if row["status"] == "kept"]
    assert kept and all(row["ocr"] == [] and row["ocr_backend"] == "off:none" and "No legible signs" in row["description"] for row in kept)


def _sign_view(size=640):
    import io

    from PIL import Image

    from corebuild.synthetic.signs import sign_texture

    img = Image.new("RGB", (size, size), (120, 130, 110))
    img.paste(sign_texture("CORNER BAKERY", (250, 250, 245), (20, 20, 20)).resize((360, 72)), (140, 300))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("side, seen", [(0, 640), (448, 448), (320, 320), (1024, 640)])
def test_detection_runs_at_the_configured_side_and_reads_at_full_size(side, seen):
    """det_side scales what the detector sees (never up); boxes come back in the view's pixels
    and recognition reads the full-size crop."""
    engine = load_ocr(OcrConfig(backend="rapidocr", det_side=side))
    det = engine._engine.text_det
    shapes, infer = [], det.infer
    det.infer = lambda x: shapes.append(x.shape) or infer(x)
    [hit] = engine.read(_sign_view())
    assert shapes == [(1, 3, seen, seen)]
    assert hit.text.replace(" ", "") == "CORNERBAKERY"
    xs = [p[0] for p in hit.box]
    assert 120 < min(xs) < 170 and 470 < max(xs) < 520


@pytest.mark.parametrize("backend", ["rapidocr", "rapidocr-v5"])
def test_detection_normalises_by_table_to_rapidocr_s_own_values(backend):
    """The engine's detection input is rapidocr's own preprocessing, bit for bit, whatever the
    view's size and the model's mean and std; only how it is computed differs."""
    import numpy as np
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    from corebuild.stages.ocr.rapidocr import table_preprocess

    det = load_ocr(OcrConfig(backend=backend, det_side=448))._engine.text_det
    ours = det.get_preprocess(640)
    assert type(ours) is not DetPreProcess and ours.limit_side_len == 448
    rng = np.random.default_rng(7)
    for mean, std in ((det.mean, det.std), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])):
        theirs, table = DetPreProcess(448, "max", mean, std), table_preprocess(448, mean, std)
        for shape in ((640, 640, 3), (480, 640, 3), (101, 37, 3), (1200, 500, 3)):
            img = rng.integers(0, 256, shape, dtype=np.uint8)
            want = theirs(img)
            got = (ours if mean is det.mean else table)(img)
            assert got.dtype == want.dtype == np.float32 and got.shape == want.shape and np.array_equal(got, want)
    floats = rng.random((300, 200, 3)).astype(np.float32) * 255  # not bytes: rapidocr's own way
    assert np.array_equal(ours(floats), DetPreProcess(448, "max", det.mean, det.std)(floats))


@pytest.mark.parametrize("side", [-1, 10, 63, 64.5])
def test_a_detection_side_too_small_is_a_config_error(side):
    from corebuild.errors import ConfigError

    with pytest.raises(ConfigError, match="ocr.det_side must be 0"):
        OcrConfig(det_side=side)


def test_detection_side_is_a_flag_and_part_of_the_config_hash():
    from corebuild.cli import build_config, parser
    from corebuild.config import BuildConfig

    cfg = build_config(parser().parse_args(["build", "--region", "demo", "--ocr-det-side", "512"]))
    assert cfg.ocr.det_side == 512
    assert OcrConfig().det_side == 448  # the default chosen by measured accuracy
    assert BuildConfig("demo").content_hash() != BuildConfig("demo", ocr=OcrConfig(det_side=512)).content_hash()


@pytest.mark.parametrize("backend", ["rapidocr", "rapidocr-v5"])
def test_rapidocr_sessions_keep_their_tensors_memory_in_an_arena(backend):
    """rapidocr opens its sessions without ONNX Runtime's memory arena; ours reopen them with it,
    the same otherwise (one thread here, as set), and still read."""
    engine = load_ocr(OcrConfig(backend=backend, threads=1, runtime="onnxruntime"))
    e = engine._engine
    sessions = [e.text_det.infer.session, e.text_rec.session.session, e.text_cls.infer.session]
    opts = [s.get_session_options() for s in sessions]
    assert all(o.enable_cpu_mem_arena and o.intra_op_num_threads == 1 for o in opts)
    assert [hit.text.replace(" ", "") for hit in engine.read(_sign_view())] == ["CORNERBAKERY"]


def _street_views_of_signs(world, n):
    """n street views of the demo town, each facing one of its signs from across the street."""
    import numpy as np

    from corebuild.synthetic.render import Camera, encode, render_street

    views = []
    for sign in world.signs[:n]:
        cx, cy, _ = sign.center
        heading = float(np.degrees(np.arctan2(-sign.normal[0], -sign.normal[1])) % 360)
        views.append(encode(render_street(world, Camera(cx + sign.normal[0] * 16, cy + sign.normal[1] * 16, heading)), "jpeg"))
    return views


@pytest.mark.parametrize("backend", ["rapidocr", "rapidocr-v5"])
def test_openvino_runs_the_models_and_reads_as_onnxruntime(backend, demo_world):
    """The default runtime: every model of the engine compiled by OpenVINO at f32, the row's model
    id saying so, and the same texts and boxes as ONNX Runtime (confidences within 1e-4)."""
    from corebuild.stages.ocr.rapidocr import OpenVinoModel

    ov = load_ocr(OcrConfig(backend=backend, threads=1))
    ort = load_ocr(OcrConfig(backend=backend, threads=1, runtime="onnxruntime"))
    e = ov._engine
    assert all(isinstance(m, OpenVinoModel) and m.precision == "f32" for m in (e.text_det.infer, e.text_cls.infer, e.text_rec.session))
    assert ov.model_id.endswith("@openvino==" + __import__("openvino").__version__.split("-")[0] + ":f32")
    assert "@onnxruntime==" in ort.model_id
    views = _street_views_of_signs(demo_world, 12)
    a, b = [ov.read(v) for v in views], [ort.read(v) for v in views]
    assert sum(map(len, b)) >= 6  # signs read: the comparison is over real readings
    assert [[(h.text, h.box) for h in hits] for hits in a] == [[(h.text, h.box) for h in hits] for hits in b]
    assert all(abs(x.confidence - y.confidence) < 1e-4 for p, q in zip(a, b) for x, y in zip(p, q))


def test_detection_runs_on_the_model_compiled_for_each_of_its_first_input_shapes(demo_world):
    """OpenVINO runs a model compiled for one input shape in ~0.8x the CPU of one compiled for any:
    detection's first input shapes each get their own (a 640-px view at the default side: one),
    later shapes run on the model for any shape, and both read the same."""
    import numpy as np

    from corebuild.stages.ocr.rapidocr import DET_STATIC_SHAPES, OpenVinoModel, openvino_core

    engine = load_ocr(OcrConfig(backend="rapidocr", threads=1))
    det = engine._engine.text_det.infer
    assert det.static_shapes == () and DET_STATIC_SHAPES >= 1
    assert engine.read(_street_views_of_signs(demo_world, 1)[0])
    side = OcrConfig().det_side
    assert det.static_shapes == ((1, 3, side, side),)
    assert det._request_for((1, 3, side, side)).model_inputs[0].partial_shape.is_static
    assert engine._engine.text_rec.session.static_shapes == ()  # recognition's widths vary: the model for any

    one = OpenVinoModel(openvino_core(), det._path, 1, "f32", static_shapes=1)
    anyshape = OpenVinoModel(openvino_core(), det._path, 1, "f32")
    rng = np.random.default_rng(0)
    x, y = rng.random((1, 3, 64, 96), dtype=np.float32), rng.random((1, 3, 96, 64), dtype=np.float32)
    on_x, on_y = one(x)[0], one(y)[0]
    assert one.static_shapes == ((1, 3, 64, 96),)  # the second shape is past the limit
    assert not one._request_for(y.shape).model_inputs[0].partial_shape.is_static
    np.testing.assert_allclose(on_x, anyshape(x)[0], atol=1e-5)
    np.testing.assert_array_equal(on_y, anyshape(y)[0])


def test_bf16_is_recorded_at_the_precision_the_cpu_runs():
    """bf16 runs where the CPU has it, f32 elsewhere; either way the row's model id names what ran."""
    import openvino

    engine = load_ocr(OcrConfig(backend="rapidocr", threads=1, precision="bf16"))
    ran = engine._engine.text_det.infer.precision
    assert ran == ("bf16" if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32")
    assert engine.model_id.endswith(":" + ran)
    assert [hit.text.replace(" ", "") for hit in engine.read(_sign_view())] == ["CORNERBAKERY"]


def test_runtime_and_precision_are_checked_and_hashed():
    from corebuild.config import BuildConfig
    from corebuild.errors import ConfigError

    assert (OcrConfig().runtime, OcrConfig().precision) == ("openvino", "f32")
    with pytest.raises(ConfigError, match="needs ocr.runtime 'openvino'"):
        OcrConfig(runtime="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="ocr.runtime must be one of"):
        OcrConfig(runtime="tensorrt")
    hashes = {BuildConfig("demo", ocr=c).content_hash() for c in (OcrConfig(), OcrConfig(runtime="onnxruntime"), OcrConfig(precision="bf16"))}
    assert len(hashes) == 3
    # On ONNX Runtime the hash is that of the builds from before the setting: they resume with it.
    assert {"runtime", "precision"} <= set(BuildConfig("demo").content_dict()["ocr"])
    assert not {"runtime", "precision"} & set(BuildConfig("demo", ocr=OcrConfig(runtime="onnxruntime")).content_dict()["ocr"])


def test_a_missing_openvino_wheel_names_the_install_and_the_other_runtime(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ModelUnavailableError, match=r"needs the openvino wheel; install it with: pip install 'corebuild\[ocr\]'.*--ocr-runtime onnxruntime"):
        load_ocr(OcrConfig(backend="rapidocr"))




def test_engines_dropped_in_any_order_or_thread_leave_signal_stacks_alone():
    """OpenVINO's CPU plugin, when created, swaps its own signal stack onto the creating thread
    and, when its last reference goes, puts back the one it found (if its own is still on) and
    frees its own. Two plugins dropped in the order they were made left this thread's signal stack
    pointing at the first one's freed memory, and the next signal killed the process. Engines
    share one core (one plugin) per process, so no engine, made and dropped in any order or
    thread (as Beam does), changes a signal stack."""
    import ctypes
    import gc
    import threading

    class Stack(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    libc = ctypes.CDLL(None, use_errno=True)

    def signal_stack():
        st = Stack()
        assert libc.sigaltstack(None, ctypes.byref(st)) == 0
        return st.ss_sp, st.ss_flags, st.ss_size

    kept = load_ocr(OcrConfig(backend="rapidocr", threads=1))  # as after any engine of this process
    before = signal_stack()
    first, second = (load_ocr(OcrConfig(backend="rapidocr", threads=1)) for _ in range(2))
    del first
    gc.collect()
    del second
    gc.collect()
    assert signal_stack() == before
    made = []
    t = threading.Thread(target=lambda: made.append(load_ocr(OcrConfig(backend="rapidocr", threads=1))))
    t.start()
    t.join()
    made.clear()
    gc.collect()
    assert signal_stack() == before and kept.read(_sign_view())
