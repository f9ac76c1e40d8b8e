"""One size for a model version: its artifact's bytes, in one format."""

from __future__ import annotations

from modelport.sizes import artifact_bytes, format_bytes


def test_artifact_bytes_count_the_model_files_only(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"p" * 1000)
    (tmp_path / "variables" / "variables.data-00000-of-00001").write_bytes(b"v" * 2000)
    (tmp_path / "modelport.json").write_text("{}" * 300)
    (tmp_path / "golden.npz").write_bytes(b"g" * 5000)
    assert artifact_bytes(tmp_path) == 3000


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 3000, 1536 * 1024, 5 * 1024**4)] == [
        "0 B",
        "1023 B",
        "2.9 KB",
        "1.5 MB",
        "5120.0 GB",
    ]
