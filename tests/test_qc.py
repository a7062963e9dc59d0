import json

from corebuild.qc import check_grounding, claimed_signs, grounded
from corebuild.record import Description, OcrText, Record


def _rec(text, signs, ocr):
    box = ((0, 0), (1, 0), (1, 1), (0, 1))
    d = Description(text, "openai", "m", "p", "h", parts=json.dumps({"road": "", "signs": signs}))
    return Record("r-s0-0000000", "r", 0, 0, 0, 0, ocr=tuple(OcrText(0.0, t, 0.9, box, dropped) for t, dropped in ocr), description=d)


def test_fuzzy_grounding_accepts_ocr_variants_and_rejects_inventions():
    evidence = ["LUNACAFE", "ROMA BAKERY 12"]
    assert grounded("Luna Cafe", evidence) and grounded("Roma Bakery", evidence) and grounded("ROMA BAKERY I2", evidence)
    assert not grounded("Starbucks", evidence) and not grounded("Central Station", evidence)


def test_claims_come_from_the_signs_list_and_quotes():
    rec = _rec('A sign reads "LUNA CAFE". Another says “NOVA BANK”.', ["LUNA CAFE", "ZEN GYM"], [])
    assert claimed_signs(rec) == ["LUNA CAFE", "ZEN GYM", "NOVA BANK"]


def test_a_one_character_sign_does_not_shift_the_quote_pairing():
    # Seen in the demo: "7" then "BAKERY" made the prose between them a claimed sign.
    rec = _rec('Facing north: a sign reading "7" ahead, a sign reading "BAKERY" on the right.', [], [("7", None), ("BAKERY", None)])
    assert claimed_signs(rec) == ["BAKERY"]
    assert not check_grounding(rec, "fail").failed


def test_hallucinated_sign_text_fails_the_row_or_is_removed():
    text = 'A red building on the left. A sign reads "LUNA CAFE". A sign reads "GRAND HOTEL". Trees line the street.'
    ocr = [("LUNA CAFE", None), ("TAXI 5", "on_car")]
    failed = check_grounding(_rec(text, ["LUNA CAFE", "GRAND HOTEL"], ocr))
    assert failed.failure_reason == "qc.ungrounded_sign_text" and "GRAND HOTEL" in failed.error
    fixed = check_grounding(_rec(text, ["LUNA CAFE", "GRAND HOTEL"], ocr), action="remove")
    assert not fixed.failed and "GRAND HOTEL" not in fixed.description.text and '"LUNA CAFE"' in fixed.description.text
    assert json.loads(fixed.description.parts)["signs"] == ["LUNA CAFE"]
    # Text dropped from the evidence (it was on a car) does not ground a claim.
    assert check_grounding(_rec('It says "TAXI 5".', ["TAXI 5"], ocr)).failure_reason == "qc.ungrounded_sign_text"
    assert check_grounding(_rec("A quiet street.", [], ocr)) == _rec("A quiet street.", [], ocr)


def test_language_check():
    from corebuild.qc import language_ok

    assert language_ok('A red building with a sign reading "喫茶店" on the left.', "en")
    assert not language_ok("左側に赤い建物があり、道路は二車線です。木が並んでいます。", "en")
    assert language_ok("左側に赤い建物があります。", "ja") and language_ok("anything", "xx")
