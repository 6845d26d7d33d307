"""``python -m dataset.download`` against a stand-in for Zenodo on the loopback address (tests/zenodo_server.py):
a clean download, one interrupted and resumed, a corrupt archive, no space, no connection, ``--only_split``.
No test reaches the internet: every address is the local server's, or a closed port on 127.0.0.1.
"""
import shutil
import socket
from collections import namedtuple

import pytest
from zenodo_server import EVALUATION_PREFIX, ZenodoStandIn, md5, records_from_demo

from dataset import download, unpack
from dataset.check import check_folder
from dataset.sources import DEVELOPMENT, DEVELOPMENT_PREFIX, EVALUATION, parse_listing
from dataset.unpack import STATE

AUDIO = [f"{DEVELOPMENT_PREFIX}.audio.{part}.zip" for part in range(1, 17)]
META, DOC = f"{DEVELOPMENT_PREFIX}.meta.zip", f"{DEVELOPMENT_PREFIX}.doc.zip"


@pytest.fixture(scope="module")
def served(demo_dir):
    return records_from_demo(demo_dir)


@pytest.fixture
def zenodo(served, monkeypatch):
    """The stand-in server; its development archives are the 'published' ones for the test."""
    records, splits = served
    for name, data in records[DEVELOPMENT.record].items():
        monkeypatch.setitem(DEVELOPMENT.published_md5, name, md5(data))
    with ZenodoStandIn(records, splits) as server:
        yield server


def run(server_url, tmp_path, *flags, dataset="development"):
    download.main([dataset, "--dir", str(tmp_path / "data"), "--zenodo_url", server_url,
                   "--split_url", f"{server_url}/split", "--split_dir", str(tmp_path / "split_setup"), *flags])


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens: a machine without a connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def data_dir(tmp_path):
    return tmp_path / "data" / DEVELOPMENT_PREFIX


def test_a_clean_download_unpacks_checks_and_says_what_next(zenodo, tmp_path, capsys):
    run(zenodo.url, tmp_path)
    out = capsys.readouterr().out
    assert sorted(zenodo.fetched) == sorted([META, DOC, *AUDIO])  # each archive once
    for name in (META, DOC, *AUDIO):  # one line per archive, once it is checked
        assert f"  {name}: downloaded, MD5 {DEVELOPMENT.published_md5[name]} ok;" in out
    assert not list((tmp_path / "data").glob("*.zip")), "archives are deleted once unpacked"
    assert (data_dir(tmp_path) / "meta.csv").is_file()
    assert len(list((data_dir(tmp_path) / "audio").glob("*.wav"))) == 32
    assert {p.name for p in (tmp_path / "split_setup").iterdir()} == {"split25.csv", "test.csv"}
    assert "All 32 clips that meta.csv names are present" in out
    assert "Not the full published set (meta.csv 32 of 230,350; split25.csv 12 of 34,900; test.csv 12 of 29,680)" in out
    assert f"export DCASE25_DATASET_DIR={data_dir(tmp_path)}\nNext: python train_base.py" in out


def test_an_interrupted_download_resumes_without_fetching_the_good_archives_again(zenodo, tmp_path, capsys):
    zenodo.drop[AUDIO[4]] = 1  # the server breaks off half-way through audio.5
    with pytest.raises(SystemExit) as stop:
        run(zenodo.url, tmp_path)
    message = str(stop.value.code)
    url = f"{zenodo.url}/records/{DEVELOPMENT.record}/files/{AUDIO[4]}?download=1"
    assert message.startswith(f"error: Could not download {AUDIO[4]} from {url} (the connection broke off")
    assert f"resumes from what is in {tmp_path / 'data'}/ (6 of 18 archives finished there)" in message
    assert f"put it into {tmp_path / 'data'}/ under its own name" in message
    assert not [p.name for p in (tmp_path / "data").iterdir() if p.is_file()], "no partial file is left behind"
    first = list(zenodo.fetched)
    assert first == [DOC, META, *AUDIO[:4]]

    zenodo.fetched.clear()
    run(zenodo.url, tmp_path)
    out = capsys.readouterr().out
    assert zenodo.fetched == AUDIO[4:], "the archives finished in the first run are not fetched again"
    assert f"  {AUDIO[0]}: unpacked earlier (2 files)" in out
    assert "All 32 clips that meta.csv names are present" in out


def test_an_archive_interrupted_while_unpacking_is_unpacked_again(zenodo, tmp_path, monkeypatch, capsys):
    real_unpack = download.unpack

    def interrupted(path, folder, archive, *args):
        if archive.name == AUDIO[2]:
            real_unpack(path, folder, archive, lambda member: member.endswith("never"))  # nothing of it lands
            unpack.record_path(folder, archive.name).unlink()  # as if stopped before the record
            raise KeyboardInterrupt
        return real_unpack(path, folder, archive, *args)

    monkeypatch.setattr(download, "unpack", interrupted)
    with pytest.raises(SystemExit, match="Interrupted. Run the same command again to resume"):
        run(zenodo.url, tmp_path)
    assert (tmp_path / "data" / AUDIO[2]).is_file(), "an archive is deleted only once its files are checked"
    monkeypatch.setattr(download, "unpack", real_unpack)
    zenodo.fetched.clear()
    run(zenodo.url, tmp_path)
    out = capsys.readouterr().out
    assert f"  {AUDIO[2]}: here already, MD5" in out
    assert zenodo.fetched == AUDIO[3:]
    assert "All 32 clips that meta.csv names are present" in out


def test_a_corrupt_archive_is_tried_once_more_then_refused_and_removed(zenodo, tmp_path, capsys):
    zenodo.corrupt[AUDIO[0]] = 1  # once: the retry gets it whole
    zenodo.corrupt[AUDIO[1]] = 2  # twice: refused
    with pytest.raises(SystemExit) as stop:
        run(zenodo.url, tmp_path)
    message, out = str(stop.value.code), capsys.readouterr().out
    expected = DEVELOPMENT.published_md5[AUDIO[1]]
    assert f"{AUDIO[0]}: MD5 " in out and "downloading it once more" in out
    assert f"  {AUDIO[0]}: downloaded, MD5" in out
    assert message.startswith(f"error: {AUDIO[1]}, downloaded twice from ")
    assert f"MD5 expected {expected}, found " in message and "The broken file was removed." in message
    found = message.split("found ")[1][:32]
    assert len(found) == 32 and found != expected
    assert not (tmp_path / "data" / AUDIO[1]).exists()


def test_no_space_stops_before_the_first_byte(zenodo, tmp_path, monkeypatch):
    zenodo.sizes[AUDIO[0]] = 5 * 10**9  # the listing announces an archive of 5 GB
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * 10**9, 10**9, 10**9))
    with pytest.raises(SystemExit) as stop:
        run(zenodo.url, tmp_path)
    assert str(stop.value.code).startswith(f"error: Not enough disk space in {tmp_path / 'data'}: the download needs "
                                           "about 10.8 GB, the disk has 1.0 GB free. Stopped before the first byte.")
    assert "--only_split 25" in str(stop.value.code)
    assert not zenodo.fetched and not any("/files/" in path for path in zenodo.requests)


def test_an_archive_that_would_not_fit_unpacked_is_not_unpacked(zenodo, tmp_path, monkeypatch):
    monkeypatch.setattr(unpack, "free_bytes", lambda folder: 0)  # the estimate passes, the exact check does not
    with pytest.raises(SystemExit, match=f"error: Not enough space to unpack {DOC}: its files need"):
        run(zenodo.url, tmp_path)


def test_offline_names_the_archive_its_address_and_the_folder(tmp_path, capsys):
    offline = closed_port_url()
    with pytest.raises(SystemExit) as stop:
        run(offline, tmp_path)
    message = str(stop.value.code)
    assert "going on with the published archive names and checksums" in capsys.readouterr().out
    assert message.startswith(f"error: Could not download {DOC} from {offline}/records/6337421/files/{DOC}?download=1 "
                              "(no connection to 127.0.0.1")
    assert f"put it into {tmp_path / 'data'}/ under its own name" in message and "resumes" in message
    with pytest.raises(SystemExit, match="Could not read the listing of TAU Urban Acoustic Scenes 2025 Mobile"):
        run(offline, tmp_path, dataset="evaluation")


def test_a_server_error_is_one_message(zenodo, tmp_path):
    zenodo.fail[META] = 503
    with pytest.raises(SystemExit, match=rf"error: Could not download {META} from .* \(the server answered 503"):
        run(zenodo.url, tmp_path)


def test_archives_put_there_by_hand_are_checked_and_used(zenodo, served, tmp_path, capsys):
    archives = served[0][DEVELOPMENT.record]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / AUDIO[0]).write_bytes(archives[AUDIO[0]])
    (tmp_path / "data" / AUDIO[1]).write_bytes(archives[AUDIO[1]][:-10])  # truncated
    run(zenodo.url, tmp_path, "--keep_archives")
    out = capsys.readouterr().out
    assert f"  {AUDIO[0]}: here already, MD5" in out and "archive kept" in out
    assert f"  {AUDIO[1]}: the copy here has MD5 " in out
    assert AUDIO[0] not in zenodo.fetched and AUDIO[1] in zenodo.fetched
    assert len(list((tmp_path / "data").glob("*.zip"))) == 18


def test_clips_lost_after_the_download_are_named_with_their_archive_and_fetched_again(zenodo, tmp_path, capsys):
    run(zenodo.url, tmp_path)
    lost = sorted((data_dir(tmp_path) / "audio").glob("*.wav"))[0]
    lost.unlink()
    with pytest.raises(Exception, match=rf"1 of 32 clips are missing .*\n  audio/{lost.name}: missing \(from "
                                        rf"{DEVELOPMENT_PREFIX}.audio.\d+.zip\)"):
        check_folder(data_dir(tmp_path), tmp_path / "split_setup")
    zenodo.fetched.clear()
    run(zenodo.url, tmp_path)
    assert len(zenodo.fetched) == 1 and "1 of its files have gone or changed" in capsys.readouterr().out
    assert lost.is_file()


def test_only_split_unpacks_the_clips_of_the_two_splits(zenodo, tmp_path, capsys):
    run(zenodo.url, tmp_path, "--only_split", "25")
    out = capsys.readouterr().out
    assert len(list((data_dir(tmp_path) / "audio").glob("*.wav"))) == 24  # 12 + 12 of the 32
    assert "outside the splits left packed" in out
    assert "All 24 clips of split25.csv and test.csv are present" in out
    assert "--only_split 25: the other 8 clips of meta.csv were not checked" in out
    with pytest.raises(Exception, match="unpacked with --only_split 25: check it with --only_split 25"):
        check_folder(data_dir(tmp_path), tmp_path / "split_setup")


def test_the_evaluation_set_is_driven_by_its_listing(zenodo, tmp_path, capsys):
    run(zenodo.url, tmp_path, dataset="evaluation")
    out = capsys.readouterr().out
    folder = tmp_path / "data" / EVALUATION_PREFIX
    assert (folder / "evaluation_setup" / "fold1_test.csv").is_file()
    assert "All 10 clips of evaluation_setup/fold1_test.csv are present" in out
    assert f"--eval_dir {folder}" in out
    assert f"record-{EVALUATION.record}.json" in {p.name for p in (tmp_path / "data" / STATE).iterdir()}


def test_a_development_listing_that_differs_from_the_published_checksums_is_refused(zenodo, tmp_path, monkeypatch):
    monkeypatch.setitem(DEVELOPMENT.published_md5, AUDIO[6], "0" * 32)
    with pytest.raises(SystemExit, match=rf"(?s)no longer lists the archives .*{AUDIO[6]}: listed [0-9a-f]{{32}}, "
                                         rf"published 0{{32}}.*Nothing was downloaded"):
        run(zenodo.url, tmp_path)
    assert not zenodo.fetched


@pytest.mark.parametrize("files", [
    [{"key": "a.zip", "size": 3, "checksum": "md5:" + "ab" * 16}],  # Zenodo's API
    [{"filename": "a.zip", "filesize": 3, "size": 3, "checksum": "ab" * 16}],  # its other version, bare MD5
    {"enabled": True, "entries": {"a.zip": {"key": "a.zip", "size": 3, "checksum": "md5:" + "AB" * 16}}},  # InvenioRDM
])
def test_the_listing_formats_of_zenodo_are_read(files):
    (archive,) = parse_listing({"id": 1, "files": files}, EVALUATION, "http://mirror")
    assert (archive.name, archive.size, archive.md5) == ("a.zip", 3, "ab" * 16)
    assert archive.url == f"http://mirror/records/{EVALUATION.record}/files/a.zip?download=1"


def test_a_listing_entry_without_an_md5_is_refused():
    with pytest.raises(Exception, match="without a name or an MD5 checksum"):
        parse_listing({"files": [{"key": "a.zip", "checksum": "sha256:" + "ab" * 32}]}, EVALUATION)
