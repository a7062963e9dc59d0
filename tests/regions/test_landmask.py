import numpy as np

from corebuild.regions.landmask import LandMask


def test_packed_cache_answers_exactly_like_global_land_mask(tmp_path):
    from global_land_mask import globe

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 50_000), rng.uniform(-180, 180, 50_000)
    fresh = LandMask(tmp_path)  # builds the cache
    assert len(list(tmp_path.glob("globe-land-*.npy"))) == 1 and not list(tmp_path.glob("*.tmp*"))
    again = LandMask(tmp_path)  # memory-maps it
    expected = globe.is_land(lat, lon)
    assert np.array_equal(fresh.is_land(lat, lon), expected)
    assert np.array_equal(again.is_land(lat, lon), expected)
    assert again.is_land([47.0, 0.0, 90.0, -90.0], [8.0, -30.0, 180.0, -180.0]).tolist() == [True, False, False, True]
