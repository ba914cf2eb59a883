"""Which changes under the configuration paths may change what is read from them."""

from __future__ import annotations

from pathlib import Path

from propylon.config.files import folder_files, may_change_texts, read_texts


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


def test_hidden_names_below_a_folder_are_left_out_but_a_path_given_is_read(
        tmp_path: Path) -> None:
    """A ConfigMap mounted as a folder: each file is in ``..<timestamp>/``, ``..data`` links
    to that folder and the visible name to ``..data/<name>``; read once, by that name."""
    stamp = tmp_path / "..2026_12_04_22_00_00.1"
    stamp.mkdir()
    (stamp / "gateway.yaml").write_text("a: 1\n")
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "gateway.yaml").symlink_to("..data/gateway.yaml")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (tmp_path / ".draft.yaml").write_text("b: 2\n")
    (tmp_path / "teams.yaml").mkdir()  # a folder with a configuration suffix: walked, not read
    (tmp_path / "teams.yaml" / "a.yaml").write_text("c: 3\n")
    errors: list = []
    texts = read_texts([tmp_path], errors)
    assert [Path(name).relative_to(tmp_path).as_posix() for name, _ in texts] == [
        "gateway.yaml", "teams.yaml/a.yaml"]
    assert texts[0][1] == "a: 1\n" and not errors
    assert [text for _, text in read_texts([tmp_path / ".draft.yaml"], errors)] == ["b: 2\n"]
    assert folder_files(tmp_path, (".yml",)) == []
