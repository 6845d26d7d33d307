"""The teacher file of knowledge distillation: its format, reading and checking it, and the lookup of a
batch's teacher logits by clip (the loss is in ``helpers/training/losses.py``).

The teacher file (``--teacher_logits``) is TAB-separated, one row per clip: a ``filename`` column
as in ``meta.csv`` (``audio/<name>.wav``), then one column per class, named as in ``CLASSES``,
holding the teacher's logits (before the softmax). ``python -m helpers.write_teacher_logits`` writes it
for runs of this project; logits made elsewhere can be used in the same form (docs/distillation.md).

The training step looks the teacher's logits up by the file names that every batch carries, so
each clip gets its own row whatever the order, the audio cache, the DataLoader workers, the
processes of a distributed run or the device selection of stage 2.
"""
import numpy as np
import pandas as pd
import torch

from dataset import validation
from dataset.dcase25 import CLASSES
from helpers.base.errors import DataError
from helpers.files import atomic_path

FLAG = "--teacher_logits"
TEACHER_COLUMNS = ["filename", *CLASSES]


class TeacherLogits:
    """The teacher's logits by clip file name; ``lookup(filenames)`` gives them in the batch's order."""

    def __init__(self, filenames, logits: torch.Tensor, path="teacher logits"):
        self.path = str(path)
        self.filenames = list(filenames)
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.row_of = {name: row for row, name in enumerate(self.filenames)}
        if len(self.row_of) != len(self.filenames) or self.logits.shape != (len(self.filenames), len(CLASSES)):
            raise ValueError("one row of logits per distinct file name, one column per class")

    def __len__(self):
        return len(self.filenames)

    @classmethod
    def read(cls, path) -> "TeacherLogits":
        """Read and check a teacher file: the header, unique file names, finite numbers only."""
        try:
            table = validation.read_table(path)
            expected = ", ".join(TEACHER_COLUMNS)
            validation.check_columns(table, path, TEACHER_COLUMNS,
                                     f"A teacher file has the columns {expected} (TAB-separated).")
            other = [name for name in table.columns if name not in TEACHER_COLUMNS]
            if other:
                raise DataError(f"{path} has column{'s' if len(other) > 1 else ''} {', '.join(other)} that a "
                                f"teacher file does not have: it holds exactly {expected}, the logits of the "
                                "classes in the challenge's class order.")
            validation.check_has_rows(table, path)
            validation.check_filled(table, path, ["filename"])
            validation.check_unique(table, path)
            logits = _finite_logits(table, path)
        except DataError as err:
            raise DataError(f"{FLAG}: {err}") from None
        return cls(table["filename"].tolist(), torch.tensor(logits), path)

    def write(self, path) -> None:
        """The file in the documented format; logits with 9 significant digits (exact for float32)."""
        table = pd.DataFrame(self.logits.double().numpy(), columns=CLASSES)
        table.insert(0, "filename", self.filenames)
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.9g")

    def check_covers(self, filenames, what="training clips") -> None:
        """Every clip of ``filenames`` has a row; else one error with the count and the first few."""
        filenames = list(filenames)
        missing = [name for name in filenames if name not in self.row_of]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataError(f"{FLAG} {self.path}: {len(missing)} of the {len(filenames)} {what} have no teacher "
                            f"logits in it ({shown}). Write the file for this data set and split "
                            "(python -m helpers.write_teacher_logits), or pass the file that was.")

    def lookup(self, filenames) -> torch.Tensor:
        """``[len(filenames), n_classes]`` float32 logits, one row per clip in the given order."""
        try:
            rows = [self.row_of[name] for name in filenames]
        except KeyError as err:
            raise DataError(f"{FLAG} {self.path} has no teacher logits for {err.args[0]}.") from None
        return self.logits[rows]


def _finite_logits(table: pd.DataFrame, path) -> np.ndarray:
    """The class columns as a float32 array, in class order; text or non-finite cells are refused."""
    numbers = table[CLASSES].apply(pd.to_numeric, errors="coerce")
    text = table[CLASSES].apply(lambda column: column.str.strip().str.lower())
    not_numbers = numbers.isna() & ~text.isin(["nan", "+nan", "-nan"])
    logits = numbers.to_numpy(dtype=np.float32)
    for bad, what in ((not_numbers.to_numpy(), "is not a number"),
                      (~np.isfinite(logits), "is not finite (NaN or infinite, also after rounding to float32)")):
        if bad.any():
            row, column = np.argwhere(bad)[0]
            cell = table[CLASSES[column]].iat[row]
            others = f" ({int(bad.sum())} cells like it)" if bad.sum() > 1 else ""
            raise DataError(f"{path} line {table.index[row]}, column {CLASSES[column]}: '{cell}' {what}{others}. "
                            "A teacher file holds finite logits only: write it again.")
    return logits


def read_teacher_logits(path, train_rows: pd.DataFrame):
    """``--teacher_logits`` read and checked to cover every clip of ``train_rows``, or None without it."""
    if not path:
        return None
    teacher = TeacherLogits.read(path)
    teacher.check_covers(train_rows["filename"])
    return teacher
