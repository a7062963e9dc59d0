from corebuild.dataset.audit import render_csv, render_html


def test_rows_from_shards_written_before_ocr_dropped_existed_still_render():
    row = {
        "sample_id": "demo-s0-0000001", "status": "kept", "failure_reason": None, "description": "A <b>red</b> building.",
        "describer_backend": "template", "describer_model": "template", "prompt_id": "template-v1",
        "ocr": [{"heading": 90.0, "text": "LUNA & CAFE", "confidence": 0.9, "box": [0.0] * 8}],  # no "dropped" key
        "street_views": [], "aerial_image": None, "aerial_format": None, "lat": 47.0, "lon": 8.0,
    }
    page = render_html([row], "t")
    assert "LUNA &amp; CAFE" in page and "A &lt;b&gt;red&lt;/b&gt; building." in page  # escaped, not injected
    assert '"LUNA & CAFE"' in render_csv([row])


def test_the_sheet_shows_sign_text_qc_could_not_check():
    row = {
        "sample_id": "il-s0-0000001", "status": "kept", "failure_reason": None, "description": 'A sign reads "מאפייה".',
        "describer_backend": "openai", "describer_model": "m", "prompt_id": "p", "ocr": [], "street_views": [], "aerial_image": None,
        "aerial_format": None, "lat": 32.0, "lon": 34.8, "ocr_languages_unread": ["ar", "he"], "signs_unverifiable": ["מאפייה"],
    }
    page = render_html([row], "t")
    assert "<b>unverifiable</b> (ar, he not read): מאפייה" in page
    assert '"[""מאפייה""]"' in render_csv([row])
