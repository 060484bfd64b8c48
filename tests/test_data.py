import io
import shutil
import stat
import zipfile

import numpy as np
import pandas as pd
import pytest

from htnetlib import data
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
    assert str(data.default_root()) == "data"


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
