import os
import stat

from sota.utils.io import atomic_write_json, atomic_write_text


def test_atomic_writes_replace_whole_files_with_the_permissions_a_plain_write_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    page = tmp_path / "sub" / "review.html"
    atomic_write_text(page, "old")
    atomic_write_text(page, "new")
    assert page.read_text() == "new" and [p.name for p in page.parent.iterdir()] == ["review.html"]  # no temp left
    mode = stat.S_IMODE(os.stat(page).st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode) and mode & stat.S_IROTH   # readable by others, not 0600
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text() == '{\n  "a": 1\n}\n'
