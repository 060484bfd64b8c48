from pathlib import Path
import io
import re
import shutil
import stat
import zipfile

import numpy as np
import pandas as pd
import pytest

from htnetlib.data import release as data
from htnetlib.data import DataError, check_release, extract_release, load_composite


@pytest.fixture
def release(synthetic_root, tmp_path):
    """A private copy of the synthetic release that a test may break."""
    return shutil.copytree(synthetic_root, tmp_path / "rel")


def test_load_synthetic(synthetic):
    t = synthetic.table
    assert list(t.columns) == ["dataset", "subject", "sample", "label", "flow_path", "apex_path"]
    assert synthetic.flows.shape == (len(t), 28, 28, 3) and synthetic.flows.dtype == np.uint8
    assert set(t.dataset) == {"smic", "casme2", "samm"} and set(t.label) == {0, 1, 2}


def test_default_root_is_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HTNET_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    monkeypatch.delenv("HTNET_DATA")
    # without the variable: the repository's data/, wherever the caller runs (notebooks/ too)
    assert data.default_root() == Path(data.__file__).resolve().parents[2] / "data"
    assert data.resolve_root(tmp_path) == tmp_path  # an argument wins
    monkeypatch.setenv("HTNET_DATA", str(tmp_path / "env"))
    assert data.resolve_root(None) == tmp_path / "env"


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_composite(tmp_path / "nowhere")


def edit_csv(root, fn):
    path = root / data.CSV_NAME
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


def test_missing_column(release):
    edit_csv(release, lambda df: df.drop(columns="label"))
    with pytest.raises(DataError, match="missing column.*label"):
        load_composite(release)


def test_unknown_label(release):
    def f(df):
        df.loc[3, "label"] = "7"
        return df
    edit_csv(release, f)
    with pytest.raises(DataError, match="row 5: unknown label '7'"):
        load_composite(release)


def test_duplicate_sample(release):
    edit_csv(release, lambda df: pd.concat([df, df.iloc[[0]]]))
    with pytest.raises(DataError, match="duplicate sample"):
        load_composite(release)


def first_flow(root):
    return root / load_composite(root).table.flow_path[0]


def test_missing_png(release):
    path = first_flow(release)
    path.unlink()
    with pytest.raises(DataError, match=f"{path.name}: file is missing"):
        load_composite(release)


def test_unreadable_png(release):
    path = first_flow(release)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10 + b"IEND\xaeB`\x82")
    with pytest.raises(DataError, match="cannot decode"):
        load_composite(release)


def test_truncated_png(release):
    path = first_flow(release)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="PNG is truncated"):
        load_composite(release)


def test_truncated_jpeg(release):
    path = release / load_composite(release).table.apex_path[2]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="JPEG is truncated"):
        load_composite(release)


def test_wrong_shape(release):
    import cv2
    path = first_flow(release)
    cv2.imwrite(str(path), np.zeros((20, 28, 3), np.uint8))
    with pytest.raises(DataError, match="shape"):
        load_composite(release)


def test_check_release_reports_counts_and_checksums(synthetic_root, tmp_path):
    manifest = tmp_path / "m.sha256"
    csv = synthetic_root / data.CSV_NAME
    manifest.write_text(f"{data.sha256(csv)}  ./{data.CSV_NAME}\n{'0' * 64}  ./nothing.png\n")
    problems = check_release(synthetic_root, manifest)
    assert any("24 samples, expected 442" in p for p in problems)
    assert any("nothing.png: missing" in p for p in problems)
    assert not any(data.CSV_NAME in p for p in problems)  # its checksum matches


def make_archive(root, names, extra=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.write(root / name, f"HTNet-abc/{name}")
        for info, payload in extra:
            zf.writestr(info, payload)
    buf.seek(0)
    return buf


def test_extract_release_offline(synthetic_root, tmp_path):
    names = [data.CSV_NAME] + list(load_composite(synthetic_root).table.flow_path[:3])
    manifest = tmp_path / "m.sha256"
    manifest.write_text("".join(f"{data.sha256(synthetic_root / n)}  ./{n}\n" for n in names))
    archive = make_archive(synthetic_root, names, extra=[("HTNet-abc/README.md", b"other")])
    dest = tmp_path / "out"
    assert extract_release(archive, dest, manifest) == sorted(names)
    assert (dest / names[1]).read_bytes() == (synthetic_root / names[1]).read_bytes()
    assert not (dest / "README.md").exists()  # only release paths are extracted


def test_extract_refuses_unsafe_members(synthetic_root, tmp_path):
    manifest = tmp_path / "m.sha256"
    manifest.write_text(f"{data.sha256(synthetic_root / data.CSV_NAME)}  ./{data.CSV_NAME}\n")
    for bad in ("HTNet-abc/../evil.txt", "/abs/evil.txt"):
        archive = make_archive(synthetic_root, [data.CSV_NAME], extra=[(bad, b"x")])
        with pytest.raises(DataError, match="absolute or parent"):
            extract_release(archive, tmp_path / "out", manifest)
    link = zipfile.ZipInfo("HTNet-abc/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_archive(synthetic_root, [data.CSV_NAME], extra=[(link, b"/etc/passwd")])
    with pytest.raises(DataError, match="symbolic link"):
        extract_release(archive, tmp_path / "out", manifest)
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_checksum_mismatch(synthetic_root, tmp_path):
    manifest = tmp_path / "m.sha256"
    manifest.write_text(f"{'1' * 64}  ./{data.CSV_NAME}\n")
    archive = make_archive(synthetic_root, [data.CSV_NAME])
    with pytest.raises(DataError, match="SHA-256 differs"):
        extract_release(archive, tmp_path / "out", manifest)
    assert not (tmp_path / "out" / data.CSV_NAME).exists()  # nothing half-written


def test_fetch_reads_an_archive_url(synthetic_root, tmp_path):
    names = [data.CSV_NAME]
    manifest = tmp_path / "m.sha256"
    manifest.write_text(f"{data.sha256(synthetic_root / data.CSV_NAME)}  ./{data.CSV_NAME}\n")
    zpath = tmp_path / "repo.zip"
    zpath.write_bytes(make_archive(synthetic_root, names).getvalue())
    dest = data.fetch(tmp_path / "fetched", url=zpath.as_uri(), manifest=manifest)
    assert (dest / data.CSV_NAME).is_file()


def test_real_release_matches_the_paper(real_root):
    assert check_release(real_root) == []
    d = load_composite(real_root)
    t = d.table
    assert len(t) == 442 and t.subject.nunique() == 68
    assert t.groupby("dataset").subject.nunique().to_dict() == {"casme2": 24, "samm": 28, "smic": 16}
    assert d.flows.shape == (442, 28, 28, 3)
    # OpenCV reads the maps as (strain, v, u): strain, a magnitude, is mostly low
    medians = np.median(d.flows.reshape(-1, 3), axis=0)
    assert medians[0] < 40 < min(medians[1:])


# --- manifest status, flow map shapes, empty tables ------------------------------------------


def test_synthetic_data_has_no_manifest_entry(release, recwarn):
    assert load_composite(release).manifest_status == "no manifest entry (not the official release)"
    assert not [w for w in recwarn if issubclass(w.category, data.ReleaseWarning)]


def official_copy(real_root, tmp_path):
    """A private copy of the real release's files that load_composite reads."""
    copy = tmp_path / "official"
    shutil.copytree(real_root / "datasets", copy / "datasets")
    shutil.copy(real_root / data.CSV_NAME, copy / data.CSV_NAME)
    return copy


def test_manifest_status_of_the_real_release(real):
    assert real.manifest_status == "matches the manifest"


def test_one_changed_pixel_is_one_warning(real_root, tmp_path):
    import cv2
    copy = official_copy(real_root, tmp_path)
    name = load_composite(copy).table.flow_path[5]
    img = cv2.imread(str(copy / name))
    img[0, 0, 0] ^= 1
    cv2.imwrite(str(copy / name), img)
    with pytest.warns(data.ReleaseWarning) as caught:
        status = load_composite(copy).manifest_status
    assert status == f"differs from the manifest in 1 file(s): {name}"
    assert len(caught) == 1 and name in str(caught[0].message)
    assert any(f"{name}: SHA-256 differs" in p for p in check_release(copy))


def test_manifest_status_is_cheap_on_the_real_release(real_root, real):
    import time
    files = [data.CSV_NAME, *real.table.flow_path, *real.table.apex_path]
    start = time.perf_counter()
    assert data.manifest_status(real_root, files) == "matches the manifest"
    assert time.perf_counter() - start < 1.0


def test_partly_official_names_are_not_the_release(synthetic_root, tmp_path):
    manifest = tmp_path / "m.sha256"
    files = [data.CSV_NAME, *load_composite(synthetic_root).table.flow_path]
    manifest.write_text("".join(f"{data.sha256(synthetic_root / n)}  ./{n}\n" for n in files[:2]))
    status = data.manifest_status(synthetic_root, files, manifest)
    assert status == ("not the official release: 23 of 25 files have no manifest entry, "
                      f"e.g. {files[2]}")
    assert data.manifest_status(synthetic_root, files[:2], manifest) == "matches the manifest"
    assert data.manifest_status(synthetic_root, files[:1] + files[2:], manifest) == (
        "no manifest entry (not the official release)")


def test_flow_maps_of_another_size_are_refused(release):
    import cv2
    paths = [release / p for p in load_composite(release).table.flow_path]
    for path in paths:
        cv2.imwrite(str(path), np.zeros((10, 10, 3), np.uint8))
    message = f"{re.escape(paths[0].name)}: flow map is 10x10x3 uint8, expected 28x28x3"
    with pytest.raises(DataError, match=message):
        load_composite(release)
    assert load_composite(release, flow_size=10).flows.shape == (len(paths), 10, 10, 3)


@pytest.mark.parametrize("odd", [0, 7])
def test_the_odd_flow_map_is_named(release, odd):
    import cv2
    path = release / load_composite(release).table.flow_path[odd]
    cv2.imwrite(str(path), np.zeros((20, 28, 3), np.uint8))
    with pytest.raises(DataError, match=f"{re.escape(path.name)}: flow map is 20x28x3 uint8"):
        load_composite(release)


@pytest.mark.parametrize("img, found", [(np.zeros((28, 28), np.uint8), "28x28 uint8"),
                                        (np.zeros((28, 28, 3), np.uint16), "28x28x3 uint16"),
                                        (np.zeros((28, 28, 4), np.uint8), "28x28x4 uint8")])
def test_flow_maps_must_be_three_channel_uint8(release, img, found):
    import cv2
    path = first_flow(release)
    cv2.imwrite(str(path), img)
    message = f"{re.escape(path.name)}: flow map is {found}, expected 28x28x3 uint8"
    with pytest.raises(DataError, match=message):
        load_composite(release)


def test_header_only_csv_has_no_samples(release):
    edit_csv(release, lambda df: df.iloc[:0])
    with pytest.raises(DataError, match=f"{data.CSV_NAME}: no samples"):
        load_composite(release)


# --- the folder's own SHA256SUMS ------------------------------------------------------------


def sums_setup(release, tmp_path):
    """A manifest of the synthetic release's CSV and first flow map, and the same as SHA256SUMS."""
    names = [data.CSV_NAME, load_composite(release).table.flow_path[0]]
    text = "".join(f"{data.sha256(release / n)}  ./{n}\n" for n in names)
    manifest = tmp_path / "m.sha256"
    manifest.write_text(text)
    return manifest, names, text


def sums_problems(release, manifest):
    return [p for p in check_release(release, manifest) if data.FOLDER_SUMS in p]


def test_consistent_folder_sums_pass(release, tmp_path):
    manifest, _, text = sums_setup(release, tmp_path)
    (release / data.FOLDER_SUMS).write_text(text)
    assert sums_problems(release, manifest) == []


def test_garbage_folder_sums_are_reported(release, tmp_path):
    manifest, _, _ = sums_setup(release, tmp_path)
    (release / data.FOLDER_SUMS).write_text("garbage\n\nnot a checksum either\n")
    problems = sums_problems(release, manifest)
    assert any("2 line(s) are not '<sha256>  <path>' (first: line 1)" in p for p in problems)
    assert any("2 file(s) of the package manifest are not listed" in p for p in problems)
    assert all("the package manifest is the reference" in p for p in problems)


def test_edited_folder_sums_are_reported(release, tmp_path):
    manifest, names, text = sums_setup(release, tmp_path)
    edited = text.replace(text[:64], "0" * 64) + f"{'1' * 64}  ./gone.png\n"
    (release / data.FOLDER_SUMS).write_text(edited)
    problems = sums_problems(release, manifest)
    assert any(f"1 listed file(s) have another SHA-256 than listed (first: {names[0]})" in p
               for p in problems)
    assert any(f"1 digest(s) disagree with the package manifest (first: {names[0]})" in p
               for p in problems)
    assert any("1 listed file(s) are missing (first: gone.png)" in p for p in problems)
    assert any("1 listed file(s) are not in the package manifest (first: gone.png)" in p
               for p in problems)


def test_real_folder_sums_agree(real_root):
    assert (real_root / data.FOLDER_SUMS).is_file()
    assert [p for p in check_release(real_root) if data.FOLDER_SUMS in p] == []


# --- fetch and extract errors are one line naming the URL or archive -------------------------


def test_fetch_of_a_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "notzip.zip"
    path.write_bytes(b"hello, not a zip")
    message = f"^{re.escape(path.as_uri())}: not a complete zip archive"
    with pytest.raises(DataError, match=message) as caught:
        data.fetch(tmp_path / "out", url=path.as_uri())
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:9/x.zip", "cannot download"),
    ("nonsense", "not a valid URL"),
    ("gopher2://example/x.zip", "cannot download .*unknown url type"),
])
def test_fetch_url_errors(tmp_path, url, message):
    with pytest.raises(DataError, match=f"^{re.escape(url)}: {message}"):
        data.fetch(tmp_path / "out", url=url, timeout=5)


def test_fetch_http_error(tmp_path, monkeypatch):
    import urllib.error

    def refuse(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match="^https://example.invalid/x.zip: HTTP error 404 Not Found"):
        data.fetch(tmp_path / "out", url="https://example.invalid/x.zip")


def test_extract_truncated_zip(synthetic_root, tmp_path):
    names = [data.CSV_NAME]
    manifest = tmp_path / "m.sha256"
    manifest.write_text(f"{data.sha256(synthetic_root / data.CSV_NAME)}  ./{data.CSV_NAME}\n")
    whole = make_archive(synthetic_root, names).getvalue()
    with pytest.raises(DataError, match="^archive: not a complete zip archive"):
        extract_release(io.BytesIO(whole[: len(whole) // 2]), tmp_path / "out", manifest)
    path = tmp_path / "cut.zip"
    path.write_bytes(whole[:-10])
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: not a complete zip archive"):
        extract_release(path, tmp_path / "out", manifest)


def test_extract_zip_without_the_release(synthetic_root, tmp_path):
    manifest = tmp_path / "m.sha256"
    manifest.write_text(f"{data.sha256(synthetic_root / data.CSV_NAME)}  ./{data.CSV_NAME}\n")
    archive = make_archive(synthetic_root, [], extra=[("HTNet-abc/README.md", b"other")])
    with pytest.raises(DataError, match="^archive: archive lacks 1 of the 1 release file"):
        extract_release(archive, tmp_path / "out", manifest)
