import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from corebuild.stages.segment.masks import rle_area, rle_decode, rle_encode


@given(arrays(bool, st.tuples(st.integers(1, 30), st.integers(1, 30))))
def test_rle_round_trip_and_area(mask):
    counts, size = rle_encode(mask)
    assert size == mask.shape and sum(counts) == mask.size
    assert np.array_equal(rle_decode(counts, size), mask)
    assert rle_area(counts) == int(mask.sum())


def test_rle_is_coco_column_major_starting_with_zeros():
    m = np.array([[1, 0], [1, 1]], dtype=bool)  # column-major: 1,1,0,1
    assert rle_encode(m) == ((0, 2, 1, 1), (2, 2))
