"""``python -m dataset.check``: a complete folder passes and says whether it is the published set; missing or
broken clips are listed (the first few and the count) in one message."""
import shutil

import pytest
from conftest import SHARED_DATA

from dataset import check
from dataset.sources import PUBLISHED_TOTALS
from dataset.validation import read_table
from helpers.base.errors import DataError


def test_the_demo_set_passes_and_is_not_the_published_set(demo_dir, capsys):
    check.main(["--dataset_dir", str(demo_dir), "--split_dir", str(demo_dir / "split_setup")])
    out = capsys.readouterr().out
    assert f"All 230 clips that meta.csv names are present in {demo_dir} with a readable header." in out
    assert ("Not the full published set (meta.csv 230 of 230,350; split25.csv 80 of 34,900; test.csv 90 of 29,680): "
            "complete for its own meta.csv") in out


def test_the_split_files_are_found_in_the_demo_layout_too(demo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no split_setup/ here: the demo set's own is used
    assert "split25.csv 80 of 34,900" in "\n".join(check.check_folder(demo_dir))


def test_missing_and_broken_clips_are_listed_with_their_count(demo_dir, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(demo_dir, folder)
    clips = sorted((folder / "audio").glob("*.wav"))
    for clip in clips[:7]:
        clip.unlink()
    clips[7].write_bytes(clips[7].read_bytes()[:200])
    with pytest.raises(SystemExit) as stop:
        check.main(["--dataset_dir", str(folder)])
    message = str(stop.value.code)
    assert message.startswith(f"error: 8 of 230 clips are missing or unreadable in {folder}:\n"
                              f"  audio/{clips[0].name}: missing\n")
    assert "\n  and 3 more" in message and "Traceback" not in message
    assert "Restore them from the original archives" in message


def test_only_split_checks_the_clips_of_the_two_splits(demo_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(demo_dir, folder)
    listed = set(read_table(folder / "split_setup" / "split25.csv")["filename"])
    listed |= set(read_table(folder / "split_setup" / "test.csv")["filename"])
    for clip in (folder / "audio").glob("*.wav"):
        if f"audio/{clip.name}" not in listed:
            clip.unlink()
    with pytest.raises(DataError, match="60 of 230 clips are missing"):
        check.check_folder(folder)
    lines = "\n".join(check.check_folder(folder, only_split=25))
    assert "All 170 clips of split25.csv and test.csv are present" in lines
    assert "the other 60 clips of meta.csv were not checked" in lines


def test_an_evaluation_set_is_checked_against_its_table(demo_dir):
    lines = check.check_folder(demo_dir / "eval")
    assert lines[0] == f"All 10 clips of evaluation_setup/fold1_test.csv are present in {demo_dir / 'eval'} with a " \
                       "readable header."


def test_a_folder_without_meta_csv_is_one_message(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .* holds neither meta.csv \(a development set\) nor"):
        check.main(["--dataset_dir", str(tmp_path)])


@pytest.mark.skipif(not (SHARED_DATA / "test.csv").is_file(), reason="the organisers' test split is not here")
def test_the_published_test_split_total_is_the_organisers_file():
    assert len(read_table(SHARED_DATA / "test.csv")) == PUBLISHED_TOTALS["test.csv"]
