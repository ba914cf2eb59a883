"""Which changes under the configuration paths may change what is read from them."""

from __future__ import annotations

from pathlib import Path

from propylon.config.files import may_change_texts, read_texts


def test_only_changes_that_can_change_the_texts_read(tmp_path: Path) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "a.yml").write_text("{}\n")
    (tmp_path / "gateway.yaml").write_text("{}\n")
    (tmp_path / "gateway.log").write_text("a line\n")
    (tmp_path / "extra.conf").write_text("{}\n")
    given = [tmp_path, tmp_path / "extra.conf"]
    read = {Path(name).name for name, _ in read_texts(given, [])}
    assert read == {"a.yml", "gateway.yaml", "extra.conf"}

    assert may_change_texts(tmp_path / "gateway.yaml", given)
    assert may_change_texts(tmp_path / "teams" / "a.yml", given)
    assert may_change_texts(tmp_path / "new.yml", given)  # created, then gone: still a change
    assert may_change_texts(tmp_path / "extra.conf", given)  # named itself
    assert may_change_texts(tmp_path / "teams", given)  # a folder
    assert may_change_texts(tmp_path / "moved-away", given)  # gone: it may have held files
    assert not may_change_texts(tmp_path / "gateway.log", given)
    (tmp_path / "teams" / "notes.txt").write_text("x\n")
    assert not may_change_texts(tmp_path / "teams" / "notes.txt", given)


def test_a_relative_path_given_matches_the_absolute_path_reported(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gateway.conf").write_text("{}\n")
    assert may_change_texts(tmp_path / "gateway.conf", ["gateway.conf"])
    assert not may_change_texts(tmp_path / "gateway.conf", ["."])
