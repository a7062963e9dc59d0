from corebuild.regions.languages import ALL_CODES, group_problem, ocr_groups


def test_groups_follow_easyocr_loading_rules():
    assert group_problem(["en", "fr", "de", "rs_latin"]) is None
    assert group_problem(["ja", "en"]) is None
    assert group_problem(["ru", "uk", "en"]) is None
    assert "cannot share" in group_problem(["ja", "ko", "en"])
    assert "cannot share" in group_problem(["ar", "ru", "en"])
    assert "cannot share" in group_problem(["ch_sim", "fr"])
    assert "unknown" in group_problem(["klingon"])


def test_country_languages_become_loadable_groups():
    assert ocr_groups("ja") == ([["ja", "en"]], [])
    assert ocr_groups("sr,hu,bs,rom") == ([["rs_cyrillic", "en"], ["rs_latin", "hu", "bs", "en"]], [])
    groups, unsupported = ocr_groups("he,ar-IL,en-IL,")
    assert groups == [["ar", "en"]] and unsupported == ["he"]
    assert ocr_groups("zh-TW,zh,nan,hak") == ([["ch_tra", "en"], ["ch_sim", "en"]], ["nan"])
    for groups, _ in (ocr_groups(x) for x in ("hi,en-IN,bn", "ms-MY,en,zh", "am,en-ET,om-ET", "el-GR,en,fr")):
        assert all(group_problem(g) is None and set(g) <= ALL_CODES for g in groups)
