"""Checks of the data before a run starts: csv files, split files, output folders (the audio files:
``dataset/audio_checks.py``).

Every problem raises one ``DataError`` that names the file, the line (as an editor shows it:
the header is line 1) or the flag, and what to do, so that a run never starts on a broken set
and never ends hours later in a pandas or decoder traceback.

Tables are read by ``read_table``, whose index is each row's line number; the checks use it to
point at the line.
"""
from pathlib import Path

import pandas as pd

from helpers.base.errors import DataError

SHOWN = 5  # problems listed by name before "and N more"


# ------------------------------------------------------------------------------------ csv files

def read_table(path) -> pd.DataFrame:
    """A TAB-separated file as strings, indexed by line number; blank lines are skipped.

    Parsed here rather than by pandas, which would silently turn an extra field into an index
    or drop it, and whose line numbers shift at blank lines; there is no quoting in these files.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded): "
                        "restore it from the original download.") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}).") from None
    lines = [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1)]
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty: it needs a header line and one row per file, TAB-separated. "
                        "Restore it from the original download.")
    (header_line, header), rows = lines[0], lines[1:]
    columns = [name.strip() for name in header.split("\t")]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise DataError(f"{path} line {header_line}: the header names the column '{repeated[0]}' twice. "
                        "Each column must appear once.")
    fields = [line.split("\t") for _, line in rows]
    for (number, _), values in zip(rows, fields):
        if len(values) != len(columns):
            raise DataError(f"{path} line {number} has {len(values)} TAB-separated fields, the header "
                            f"{len(columns)}: fix the line or remove it.")
    return pd.DataFrame(fields, columns=columns, index=[number for number, _ in rows], dtype=str)


def check_columns(table: pd.DataFrame, path, required, hint="") -> None:
    """The header holds ``required``; a single column with commas is named as what it is."""
    missing = [name for name in required if name not in table.columns]
    if not missing:
        return
    if len(table.columns) == 1 and any(sep in table.columns[0] for sep in ",;"):
        raise DataError(f"{path} is not TAB-separated: its header line '{table.columns[0]}' has no TAB "
                        "(comma- or semicolon-separated?). Save it with TABs between the columns.")
    raise DataError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"(header line 1 has: {', '.join(table.columns)}). {hint}".rstrip())


def check_has_rows(table: pd.DataFrame, path) -> None:
    if table.empty:
        raise DataError(f"{path} has a header but no rows: restore it from the original download.")


def check_filled(table: pd.DataFrame, path, columns) -> None:
    """No empty cell in ``columns`` (a row with fewer fields than the header has empty cells)."""
    for column in columns:
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise DataError(f"{path} line {empty[0]}: the column '{column}' is empty{_more(empty, 'line')}. "
                            "Fill it in or remove the line.")


def check_values(table: pd.DataFrame, path, column, allowed, what) -> None:
    bad = table.index[~table[column].isin(allowed)]
    if len(bad):
        raise DataError(f"{path} line {bad[0]}: unknown {what} '{table.at[bad[0], column]}'{_more(bad, 'line')}; "
                        f"known are {', '.join(allowed)}. Fix the line or remove it.")


def check_unique(table: pd.DataFrame, path, column="filename") -> None:
    repeated = table.index[table[column].duplicated()]
    if len(repeated):
        line = repeated[0]
        first = table.index[table[column] == table.at[line, column]][0]
        raise DataError(f"{path} line {line}: file name {table.at[line, column]} is listed again (first at line "
                        f"{first}){_more(repeated, 'repeated line')}. Remove the repeated lines.")


def check_file_names(table: pd.DataFrame, path) -> None:
    """``audio/<name>.wav`` inside the data folder: no absolute paths, no ``..``."""
    names = table["filename"]
    good = names.str.startswith("audio/") & names.str.endswith(".wav") & ~names.str.contains(r"\.\./|\\", regex=True)
    bad = table.index[~good]
    if len(bad):
        raise DataError(f"{path} line {bad[0]}: file name '{names[bad[0]]}' is not of the form audio/<name>.wav"
                        f"{_more(bad, 'line')}. Fix the line or remove it.")


def check_meta(meta: pd.DataFrame, path, classes, devices) -> None:
    """``meta.csv`` of the development set: columns, labels, devices, unique ``audio/*.wav`` names."""
    check_columns(meta, path, ("filename", "scene_label", "identifier", "source_label"),
                  "meta.csv of TAU Urban Acoustic Scenes 2022 Mobile (development) has these four columns.")
    check_has_rows(meta, path)
    check_filled(meta, path, ("filename", "scene_label", "source_label"))
    check_file_names(meta, path)
    check_values(meta, path, "scene_label", classes, "scene label")
    check_values(meta, path, "source_label", devices, "device")
    check_unique(meta, path)


def check_split(split: pd.DataFrame, path, meta_files, meta_path) -> None:
    """A split file: a unique ``filename`` column whose files are all in ``meta.csv``."""
    check_columns(split, path, ("filename",), "The organisers' split files have the columns filename, scene_label.")
    check_has_rows(split, path)
    check_filled(split, path, ("filename",))
    check_unique(split, path)
    unknown = split.index[~split["filename"].isin(meta_files)]
    if len(unknown):
        raise DataError(f"{path} line {unknown[0]}: {split.at[unknown[0], 'filename']} is not in {meta_path}"
                        f"{_more(unknown, 'line')}. The split file and the data set do not belong together: "
                        "check --dataset_dir and --split_dir.")


def check_evaluation_table(rows: pd.DataFrame, path, device_column) -> None:
    """``fold1_test.csv`` of an evaluation set; any device name is accepted (``unknown`` included)."""
    check_has_rows(rows, path)
    check_filled(rows, path, ("filename", device_column))
    check_unique(rows, path)


def _more(index, what) -> str:
    return f" (and {len(index) - 1} more {what}{'s' if len(index) > 2 else ''})" if len(index) > 1 else ""


# -------------------------------------------------------------------------------- output folders

def check_outside_dataset(path, dataset_dir, flag, why="", instead="") -> None:
    """Nothing is ever written into the data folder: refuse an output folder inside it."""
    target, data = Path(path).resolve(), Path(dataset_dir).resolve()
    if target == data or data in target.parents:
        raise DataError(f"{flag} {path} is inside the data folder {dataset_dir}, where nothing is ever written"
                        f"{why}: pass a {flag} outside it{instead}.")
