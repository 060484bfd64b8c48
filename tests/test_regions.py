import numpy as np
import pytest

from htnetlib.data import regions
from htnetlib.data.regions import FALLBACK_LANDMARKS, Landmarks, crop_centres, mosaic


def coded_flows(n=1, size=28):
    """Flow maps whose pixel (r, c) holds r in channel 0 and c in channel 1."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    f = np.stack([r, c, np.zeros_like(r)], -1).astype(np.uint8)
    return np.repeat(f[None], n, 0)


def test_official_mode_uses_x_as_row_and_clamps():
    pts = np.array([[[3.7, 10.2], [20.9, 12.5], [14, 14], [9.99, 25.0], [22.0, 21.5]]])
    lm = Landmarks(pts, np.array([[28.0, 28.0]]))
    centres = crop_centres(lm, "official")
    # clamp to [7, 21] then truncate; landmarks 0, 1, 3, 4; (x, y) used as (row, col)
    assert centres[0].tolist() == [[7, 10], [20, 12], [9, 21], [21, 21]]
    m = mosaic(coded_flows(), centres)
    assert m.shape == (1, 28, 28, 3)
    # top-left crop is rows 0..13, cols 3..16 of the map (centre row 7, col 10)
    assert m[0, 0, 0, :2].tolist() == [0, 3] and m[0, 13, 13, :2].tolist() == [13, 16]
    # bottom-right crop is centred at (21, 21)
    assert m[0, 14, 14, :2].tolist() == [14, 14] and m[0, 27, 27, :2].tolist() == [27, 27]


def test_official_fallback_where_no_face():
    lm = Landmarks(np.full((1, 5, 2), np.nan), np.array([[28.0, 28.0]]))
    expected = np.clip(FALLBACK_LANDMARKS, 7, 21).astype(int)[[0, 1, 3, 4]]
    assert crop_centres(lm, "official")[0].tolist() == expected.tolist()


def test_corrected_mode_scales_and_uses_y_as_row():
    pts = np.array([[[80.0, 64.0], [150.0, 66.0], [112, 112], [90.0, 170.0], [140.0, 168.0]]])
    lm = Landmarks(pts, np.array([[224.0, 224.0]]))
    centres = crop_centres(lm, "corrected")
    # scale 28/224 = 1/8: left eye (x 10, y 8) -> (row 8, col 10)
    assert centres[0].tolist() == [[8, 10], [8, 19], [21, 11], [21, 18]]


def test_whole_mode_and_resize(synthetic):
    x = regions.region_inputs(synthetic, "whole")
    assert np.array_equal(x, synthetic.flows)
    big = regions.region_inputs(synthetic, "official", size=36)
    assert big.shape == (len(synthetic), 36, 36, 3)
    with pytest.raises(ValueError, match="unknown region mode"):
        crop_centres(Landmarks(np.zeros((1, 5, 2)), np.ones((1, 2))), "nose")


def test_landmarks_are_cached(synthetic, monkeypatch, tmp_path):
    monkeypatch.setenv("HTNET_CACHE", str(tmp_path))
    first = regions.find_landmarks(synthetic, "corrected")
    assert (tmp_path / "landmarks-corrected.json").is_file()
    monkeypatch.setattr(regions, "detect_landmarks", lambda img: pytest.fail("MTCNN ran again"))
    again = regions.find_landmarks(synthetic, "corrected")
    np.testing.assert_array_equal(first.points, again.points)


def test_mtcnn_finds_the_astronaut(synthetic):
    corrected = regions.find_landmarks(synthetic, "corrected")
    assert corrected.found.all()
    # landmarks sit where a face has them: eyes above the mouth, left eye left of right eye
    p = corrected.points
    assert (p[:, 0, 0] < p[:, 1, 0]).all() and (p[:, 0, 1] < p[:, 3, 1]).all()


def test_real_fallback_counts(real):
    """MTCNN finds no face in 172 apex images at 28x28 and in 8 at full resolution."""
    assert (~regions.find_landmarks(real, "official").found).sum() == 172
    assert (~regions.find_landmarks(real, "corrected").found).sum() == 8


def fake_detector(monkeypatch):
    """MTCNN replaced by fixed landmarks; returns the list of images it was shown."""
    shown = []

    def detect(img):
        shown.append(img)
        return FALLBACK_LANDMARKS.copy()

    monkeypatch.setattr(regions, "detect_landmarks", detect)
    return shown


@pytest.mark.parametrize("content", [
    '{"0123456789abcdef": {"points": null, "si',  # truncated
    "\x00\xff not JSON at all",
    '[1, 2, 3]',  # JSON, not an object
    '{"0123456789abcdef": {"points": [[1, 2], [3, 4], [5, 6]], "size": [28, 28]}}',  # 3 points
    '{"0123456789abcdef": {"points": null}}',  # no size
])
def test_corrupt_landmark_cache_is_set_aside_and_found_again(synthetic, monkeypatch, tmp_path,
                                                            content):
    monkeypatch.setenv("HTNET_CACHE", str(tmp_path))
    store = tmp_path / "landmarks-official.json"
    store.write_bytes(content.encode("latin-1"))
    shown = fake_detector(monkeypatch)
    with pytest.warns(UserWarning, match="landmarks-official.json: corrupt landmark cache") as w:
        lm = regions.find_landmarks(synthetic, "official")
    assert len(w) == 1 and "\n" not in str(w[0].message)
    assert shown and len(shown) == len(regions.read_cache(store))  # every face found again
    np.testing.assert_array_equal(lm.points[0], FALLBACK_LANDMARKS)
    assert (tmp_path / "landmarks-official.json.corrupt").read_bytes() == content.encode("latin-1")


def test_corrupt_landmark_cache_that_cannot_be_moved_is_a_data_error(synthetic, monkeypatch,
                                                                     tmp_path):
    from htnetlib.data import DataError

    monkeypatch.setenv("HTNET_CACHE", str(tmp_path))
    store = tmp_path / "landmarks-corrected.json"
    store.write_text("{not json")
    fake_detector(monkeypatch)

    def no_replace(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(regions.os, "replace", no_replace)
    with pytest.raises(DataError, match="landmarks-corrected.json: corrupt landmark cache"):
        regions.find_landmarks(synthetic, "corrected")
    assert store.read_text() == "{not json"
