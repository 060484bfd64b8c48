"""Synthetic micro-expressions: shapes, reproducibility, apex and action-unit fields."""

import numpy as np
import pytest

from htnetlib.data import synthetic


def test_astronaut_face_shape_and_dtype():
    face = synthetic.astronaut_face()
    assert face.shape == (224, 224, 3) and face.dtype == np.uint8
    assert synthetic.astronaut_face(96).shape == (96, 96, 3)
    face[:] = 0  # a copy: the cached face stays intact
    assert synthetic.astronaut_face().max() > 0


def test_landmarks_scale_with_size():
    np.testing.assert_allclose(synthetic.face_landmarks(112), synthetic.face_landmarks(224) / 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = synthetic.face_landmarks()
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert left_eye[1] < nose[1] < mouth_l[1]


@pytest.mark.parametrize("label", [0, 1, 2])
def test_au_field_shape_peak_and_zero_far_away(label):
    field = synthetic.au_field(label, size=224, amplitude=1.5)
    assert field.shape == (224, 224, 2) and field.dtype == np.float32
    magnitude = np.hypot(field[..., 0], field[..., 1])
    assert 1.3 < magnitude.max() <= 1.5 * 1.01
    # zero far from the action units: the image border, the nose tip, the forehead top
    assert magnitude[:, :10].max() == 0 and magnitude[:, -10:].max() == 0
    assert magnitude[:20].max() == 0
    nose_x, nose_y = synthetic.face_landmarks()[2].astype(int)
    assert magnitude[nose_y - 3 : nose_y + 3, nose_x - 3 : nose_x + 3].max() == 0


def test_au_field_directions_follow_the_action_units():
    left_eye_y = synthetic.face_landmarks()[0][1]
    # surprise raises the brows (v < 0 above the eyes) and drops the jaw (v > 0 low)
    surprise = synthetic.au_field(2)
    assert surprise[: int(left_eye_y), :, 1].min() < -1 and surprise[: int(left_eye_y), :, 1].max() <= 0
    assert surprise[160:, :, 1].max() > 1
    # positive pulls the left mouth corner left and up, the right one right and up
    positive = synthetic.au_field(1)
    (lx, ly), (rx, ry) = synthetic.face_landmarks()[3:].astype(int)
    assert positive[ly, lx, 0] < 0 and positive[ly, lx, 1] < 0
    assert positive[ry, rx, 0] > 0 and positive[ry, rx, 1] < 0
    # negative lowers the mouth corners and the inner brows
    negative = synthetic.au_field(0)
    assert negative[ly, lx, 1] > 0 and negative[: int(left_eye_y), :, 1].max() > 1


def test_labels_differ_and_bad_label_fails():
    fields = [synthetic.au_field(label) for label in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(fields[a] - fields[b]).max() > 1
    with pytest.raises(ValueError, match="label"):
        synthetic.au_field(3)


def test_rng_jitters_the_field_reproducibly():
    a = synthetic.au_field(1, rng=np.random.default_rng(5))
    b = synthetic.au_field(1, rng=np.random.default_rng(5))
    c = synthetic.au_field(1, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05


def test_random_smooth_field_peak_and_smoothness():
    field = synthetic.random_smooth_field(224, max_disp=2.0, seed=3)
    assert field.shape == (224, 224, 2) and field.dtype == np.float32
    assert np.hypot(field[..., 0], field[..., 1]).max() == pytest.approx(2.0, rel=1e-5)
    assert np.abs(np.diff(field, axis=0)).max() < 0.2  # smooth: small change per pixel
    np.testing.assert_array_equal(field, synthetic.random_smooth_field(224, 2.0, seed=3))
    assert np.abs(field - synthetic.random_smooth_field(224, 2.0, seed=4)).max() > 0.1


def test_warp_moves_content_by_the_flow():
    image = np.zeros((64, 64), dtype=np.float32)
    image[30, 20] = 1.0
    flow = np.zeros((64, 64, 2), dtype=np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0  # everything moves 3 right and 2 up
    moved = synthetic.warp(image, flow)
    assert np.unravel_index(np.argmax(moved), moved.shape) == (28, 23)
    # a smooth non-uniform field: result(p + flow(p)) ~= image(p) at a textured point
    face = synthetic.astronaut_face(224)[..., 1].astype(np.float32)
    field = synthetic.random_smooth_field(224, 1.5, seed=1)
    warped = synthetic.warp(face, field)
    import cv2

    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    back = cv2.remap(warped, xx + field[..., 0], yy + field[..., 1], cv2.INTER_CUBIC)
    inner = np.s_[10:-10, 10:-10]
    assert np.median(np.abs(back - face)[inner]) < 1.0


def test_make_pair_reproducible_and_consistent():
    pair = synthetic.make_pair(2, seed=7)
    assert pair.onset.shape == pair.apex.shape == (224, 224, 3)
    assert pair.onset.dtype == pair.apex.dtype == np.uint8
    assert pair.flow.shape == (224, 224, 2) and pair.label == 2
    again = synthetic.make_pair(2, seed=7)
    np.testing.assert_array_equal(pair.apex, again.apex)
    np.testing.assert_array_equal(pair.flow, again.flow)
    assert np.abs(pair.flow - synthetic.make_pair(2, seed=8).flow).max() > 0.05
    assert not np.array_equal(pair.onset, pair.apex)


def test_make_sequence_apex_has_the_largest_displacement():
    seq = synthetic.make_sequence(0, n_frames=12, apex=5, seed=1, noise=1.0)
    assert len(seq.frames) == 12 and seq.apex == 5
    assert all(f.shape == (224, 224, 3) and f.dtype == np.uint8 for f in seq.frames)
    assert seq.weights[0] == 0 and seq.weights[5] == 1 and seq.weights[-1] == pytest.approx(0)
    assert int(np.argmax(seq.weights)) == 5
    assert np.all(np.diff(seq.weights[:6]) > 0) and np.all(np.diff(seq.weights[5:]) < 0)
    face = synthetic.astronaut_face().astype(np.float32)
    assert np.abs(seq.frames[0] - face).mean() > 0.3  # sensor noise on every frame
    # without noise the image change grows up to the apex and shrinks after it
    clean = synthetic.make_sequence(0, n_frames=12, apex=5, seed=1, noise=0.0)
    np.testing.assert_array_equal(clean.frames[0], face.astype(np.uint8))
    change = [np.abs(f.astype(np.float32) - face).mean() for f in clean.frames]
    assert int(np.argmax(change)) == 5
    assert change[1] < change[3] < change[5] and change[5] > change[8] > change[11]


def test_make_sequence_reproducible_and_random_apex_in_range():
    a = synthetic.make_sequence(1, n_frames=8, seed=3)
    b = synthetic.make_sequence(1, n_frames=8, seed=3)
    assert a.apex == b.apex and 2 <= a.apex <= 6
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa, fb)
    with pytest.raises(ValueError, match="apex"):
        synthetic.make_sequence(1, n_frames=8, apex=8)
    with pytest.raises(ValueError, match="frames"):
        synthetic.make_sequence(1, n_frames=1)


def test_ramp_profiles_rise_alike_and_the_asymmetric_one_decays_slower():
    sym, asym = synthetic.ramp(16, 5), synthetic.ramp(16, 5, "asymmetric")
    np.testing.assert_array_equal(sym[:6], asym[:6])  # the same rise up to the apex
    assert sym[0] == asym[0] == 0 and sym[5] == asym[5] == 1
    assert sym[-1] == pytest.approx(0) and asym[-1] == pytest.approx(0)
    assert np.all(asym[6:-1] > sym[6:-1]) and np.all(np.diff(asym[5:]) < 0)
    # twice as flat next to the apex: 1 - w one frame after it halves
    assert 1 - asym[6] == pytest.approx((1 - sym[6]) / 2, rel=0.01)
    np.testing.assert_array_equal(synthetic.ramp(6, 5, "asymmetric"), synthetic.ramp(6, 5))
    with pytest.raises(ValueError, match="profile"):
        synthetic.ramp(16, 5, "linear")


def test_make_sequence_asymmetric_profile_has_an_early_apex():
    apexes = [synthetic.make_sequence(0, n_frames=30, seed=s, noise=0.0, size=32,
                                      profile="asymmetric").apex for s in range(6)]
    assert all(5 <= a <= 10 for a in apexes)  # [n // 6, n // 3]: the decay is the longer part
    seq = synthetic.make_sequence(2, n_frames=12, apex=3, seed=1, size=32, profile="asymmetric")
    np.testing.assert_allclose(seq.weights, synthetic.ramp(12, 3, "asymmetric"), rtol=1e-6)
    with pytest.raises(ValueError, match="profile"):
        synthetic.make_sequence(0, n_frames=8, profile="fast")


SMALL_COHORT = {"subjects": {"smic": 1, "samm": 2}, "samples": (3, 4),
                "class_p": (0.5, 0.25, 0.25), "seed": 1, "version": 1}


def test_the_cohort_is_a_release_every_loader_reads(tmp_path):
    from htnetlib.data import load_composite, table1

    root = synthetic.write_cohort(tmp_path / "cohort", cohort=SMALL_COHORT)
    data = load_composite(root)
    assert data.table.groupby("dataset")["subject"].nunique().to_dict() == {"smic": 1, "samm": 2}
    assert 9 <= len(data) <= 12 and data.flows.shape[1:] == (28, 28, 3)
    # each map is min-max stretched per channel, as the release's maps are
    assert (data.flows.reshape(len(data), -1, 3).min(axis=1) == 0).all()
    assert (data.flows.reshape(len(data), -1, 3).max(axis=1) == 255).all()
    assert int(table1(data).iloc[-1]["samples"]) == len(data)


def test_the_cohort_is_written_once_and_again_when_its_mark_differs(tmp_path):
    root = synthetic.write_cohort(tmp_path / "cohort", cohort=SMALL_COHORT)
    stamp = (root / synthetic.COHORT_MARK).stat().st_mtime_ns
    assert synthetic.write_cohort(root, cohort=SMALL_COHORT) == root
    assert (root / synthetic.COHORT_MARK).stat().st_mtime_ns == stamp  # reused
    (root / synthetic.COHORT_MARK).write_text("{}")  # an interrupted or older cohort
    synthetic.write_cohort(root, cohort=SMALL_COHORT)
    assert (root / synthetic.COHORT_MARK).read_text() != "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftover


def test_the_cohort_is_the_same_on_every_write(tmp_path):
    from htnetlib.data import load_composite

    a = load_composite(synthetic.write_cohort(tmp_path / "a", cohort=SMALL_COHORT))
    b = load_composite(synthetic.write_cohort(tmp_path / "b", cohort=SMALL_COHORT))
    np.testing.assert_array_equal(a.flows, b.flows)
    assert a.table["label"].tolist() == b.table["label"].tolist()
