"""TAU Urban Acoustic Scenes 2022 Mobile (development): metadata, splits, decoding and datasets.

The layout is the organisers': ``<dataset_dir>/meta.csv`` (TAB-separated) and
``<dataset_dir>/audio/*.wav``; split files (``split25.csv``, ``test.csv``) live in a separate
folder and are downloaded from the organisers' release when missing.
"""
import os
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from torch.utils.data import Dataset

from dataset import validation
from dataset.audio import AudioError, ClipReader
from helpers.base.errors import DataError

CLASSES = ["airport", "bus", "metro", "metro_station", "park", "public_square",
           "shopping_mall", "street_pedestrian", "street_traffic", "tram"]
DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
TRAIN_DEVICES = ["a", "b", "c", "s1", "s2", "s3"]
DEVICE_GROUPS = {"a": "real", "b": "real", "c": "real",
                 "s1": "seen", "s2": "seen", "s3": "seen",
                 "s4": "unseen", "s5": "unseen", "s6": "unseen"}

SPLIT_URL = "https://github.com/CPJKU/dcase2024_task1_baseline/releases/download/files/"
DATASET_DIR_ENV = "DCASE25_DATASET_DIR"
ALLOWED_SUBSET = 25


def resolve_dataset_dir(dataset_dir=None) -> Path:
    """``--dataset_dir`` if given, else ``$DCASE25_DATASET_DIR``; the folder must hold ``meta.csv``."""
    dataset_dir = dataset_dir or os.environ.get(DATASET_DIR_ENV)
    if not dataset_dir:
        raise DataError(
            f"No data set given: pass --dataset_dir DIR or set {DATASET_DIR_ENV}=DIR, where DIR holds "
            "meta.csv and audio/ of TAU Urban Acoustic Scenes 2022 Mobile (development), "
            "or run with --demo to use the built-in synthetic demo set.")
    dataset_dir = Path(dataset_dir).expanduser()
    if not (dataset_dir / "meta.csv").is_file():
        raise DataError(f"{dataset_dir / 'meta.csv'} not found: --dataset_dir (or {DATASET_DIR_ENV}) must "
                        "point to the extracted development set, the folder that holds meta.csv and audio/.")
    return dataset_dir


def split_file(split_dir, name: str, dataset_dir=None, url=None) -> Path:
    """Path of split file ``name`` in ``split_dir``, downloaded from the organisers' release (or ``url``, a
    folder address) if missing (never into ``dataset_dir``)."""
    split_dir = Path(split_dir)
    path = split_dir / name
    if path.is_file():
        return path
    url = (url or SPLIT_URL).rstrip("/") + "/" + name
    if dataset_dir is not None:
        validation.check_outside_dataset(split_dir, dataset_dir, "--split_dir",
                                         why=f" ({name} is missing there and would be downloaded from {url})",
                                         instead=f", or put {name} into {split_dir}/ yourself")
    split_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    print(f"Downloading split file {name} from {url} to {split_dir}/")
    try:
        urllib.request.urlretrieve(url, partial)
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"Split file {name} is missing from {split_dir}/ and could not be downloaded from {url} "
            f"({err}). Download it on a machine with internet access and put it into {split_dir}/, "
            "or pass --split_dir to the folder that holds it.") from err
    partial.replace(path)  # only a complete download gets the real name
    return path


def read_meta(dataset_dir) -> pd.DataFrame:
    """``meta.csv``, checked: columns, scene labels, devices, unique ``audio/*.wav`` names."""
    path = Path(dataset_dir) / "meta.csv"
    meta = validation.read_table(path)
    validation.check_meta(meta, path, CLASSES, DEVICES)
    return meta.reset_index(drop=True)


def read_split(split_dir, name, dataset_dir, meta) -> pd.DataFrame:
    """Split file ``name``, checked against ``meta`` (every file listed there, none twice)."""
    path = split_file(split_dir, name, dataset_dir)
    split = validation.read_table(path)
    validation.check_split(split, path, meta["filename"], Path(dataset_dir) / "meta.csv")
    return split.reset_index(drop=True)


def select_split(meta: pd.DataFrame, split: pd.DataFrame, devices=None) -> pd.DataFrame:
    """Rows of ``meta`` listed in ``split``, in the split file's order, optionally only ``devices``."""
    rows = split[["filename"]].merge(meta, on="filename", how="inner", validate="one_to_one")
    if devices is not None:
        rows = rows[rows["source_label"].isin(list(devices))]
    return rows.reset_index(drop=True)


class AudioDataset(Dataset):
    """Clips of a selection of ``meta.csv`` -> ``(waveform [1, samples], label, device, filename)``.

    ``label`` is the index into ``CLASSES`` (-1 when the rows carry no scene label). It only reads
    audio: training augmentations act on the batch (``helpers/training/augmentation.py``). With an
    ``AudioCache`` the waveforms come from it, already resampled, instead of from the wav files.
    Wav files come at ``sample_rate`` (files at another rate are resampled) and ``seconds`` long
    (padded or cut), so that every batch collates.
    """

    def __init__(self, dataset_dir, rows: pd.DataFrame, device_column="source_label",
                 cache=None, sample_rate: int = 44100, seconds: float = 1.0):
        self.dataset_dir = Path(dataset_dir)
        self.files = rows["filename"].tolist()
        self.devices = rows[device_column].astype(str).tolist()
        if "scene_label" in rows:
            self.labels = [CLASSES.index(label) for label in rows["scene_label"]]
        else:
            self.labels = [-1] * len(self.files)
        self.cache = cache
        self.read_clip = ClipReader(sample_rate, seconds)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        if self.cache is not None:
            waveform = self.cache.waveform(self.files[index])
        else:
            waveform = self.read_wav(self.dataset_dir / self.files[index])
        return waveform, self.labels[index], self.devices[index], self.files[index]

    def __getitems__(self, indices):
        """A batch's items (the DataLoader asks for them together): from the cache in one read,
        otherwise one by one. The same items as ``__getitem__`` gives."""
        if self.cache is None:
            return [self[i] for i in indices]
        waveforms = self.cache.waveforms([self.files[i] for i in indices])
        return [(waveform, self.labels[i], self.devices[i], self.files[i]) for waveform, i in zip(waveforms, indices)]

    def read_wav(self, path):
        """``[1, n_samples]`` at ``sample_rate``; a file that cannot be decoded is named in the error."""
        try:
            return self.read_clip(path)[0]
        except AudioError as err:  # raised in a DataLoader worker, the message reaches the user
            raise DataError(f"{err} Restore the file from the original download, or remove its lines from "
                            "meta.csv and the split files.") from err


def training_rows(dataset_dir, split_dir, subset: int = ALLOWED_SUBSET, devices=None) -> pd.DataFrame:
    """The rows of the organisers' training split; only the 25 % split is allowed by the rules."""
    if subset != ALLOWED_SUBSET:
        raise DataError(f"--subset {subset} is not allowed: the DCASE 2025 Task 1 rules say models must "
                        f"be trained on the 25 % split only. Use --subset {ALLOWED_SUBSET}.")
    meta = read_meta(dataset_dir)
    split = read_split(split_dir, f"split{subset}.csv", dataset_dir, meta)
    return _non_empty(select_split(meta, split, devices), f"split{subset}.csv", devices)


def test_rows(dataset_dir, split_dir, devices=None) -> pd.DataFrame:
    """The rows of the development-test split (used for validation and the final test)."""
    meta = read_meta(dataset_dir)
    split = read_split(split_dir, "test.csv", dataset_dir, meta)
    return _non_empty(select_split(meta, split, devices), "test.csv", devices)


def of_devices(rows: pd.DataFrame, devices) -> pd.DataFrame:
    """The rows recorded by ``devices``; an empty selection is an error, not an empty epoch."""
    devices = [devices] if isinstance(devices, str) else list(devices)
    return _non_empty(rows[rows["source_label"].isin(devices)], "The split", devices)


def _non_empty(rows, name, devices):
    if rows.empty:
        which = f" of devices {', '.join(devices)}" if devices is not None else ""
        raise DataError(f"{name} selects no clips{which}: check --dataset_dir, --split_dir"
                        f"{' and --train_devices' if devices is not None else ''}.")
    return rows
