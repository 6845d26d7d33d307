"""Writing a demo set: the files in the real layout, the marker that says a folder holds a finished set
(of which version, seed, scale and variant), and the command ``python -m dataset.demo``."""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

from dataset.demo.default_variant import default_record
from dataset.demo.dir_responses import write_demo_impulse_responses
from dataset.demo.hard_devices import hard_record
from dataset.demo.hard_profiles import HARD_VERSION
from dataset.demo.plan import VARIANTS, Recording, check_variant, plan_recordings
from dataset.demo.sound import DEMO_VERSION, KNOWN_EVAL_DEVICES, ClipKey, keyed_rng, write_wav
from helpers.base.command_line import StrictParser

DESCRIPTION = "Synthetic stand-in for the DCASE 2025 Task 1 data, in the real on-disk layout."
MARKER_NAME = ".demo_complete"
IN_PROGRESS_NAME = ".demo_in_progress"  # written first: marks a folder as ours
DEMO_OUTPUTS = ("audio", "eval", "split_setup", "meta.csv", MARKER_NAME, IN_PROGRESS_NAME)


def _marker(seed: int, scale: float, variant: str = "default") -> dict:
    """The default variant's marker is the one written before variants existed (its folders stay valid);
    another variant's adds its name and version."""
    marker = {"version": DEMO_VERSION, "seed": int(seed), "scale": float(scale)}
    if variant == "hard":
        marker.update(variant="hard", variant_version=HARD_VERSION)
    return marker


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _variant_of(marker) -> str | None:
    """The variant a marker (or in-progress note) names; None for what is not one."""
    if not isinstance(marker, dict):
        return None
    return marker.get("variant", "default")


def _current(marker) -> bool:
    """Written by this generator's version (and, for a variant, the variant's version)."""
    if not isinstance(marker, dict) or marker.get("version") != DEMO_VERSION:
        return False
    if _variant_of(marker) == "hard":
        return marker.get("variant_version") == HARD_VERSION
    return _variant_of(marker) == "default"


def is_complete(root, variant: str | None = None) -> bool:
    """True when ``root`` holds a finished demo set of this generator version (any seed or scale) of
    ``variant`` (None: of any variant)."""
    marker = _read_json(Path(root) / MARKER_NAME)
    return _current(marker) and variant in (None, _variant_of(marker))


def demo_variant(root) -> str | None:
    """The variant of the demo set in ``root`` ("default", "hard"), finished or not; None if it holds none."""
    root = Path(root)
    return _variant_of(_read_json(root / MARKER_NAME)) or _variant_of(_read_json(root / IN_PROGRESS_NAME))


def _remove_demo_outputs(root: Path) -> None:
    for name in DEMO_OUTPUTS:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _write_tsv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_demo_dataset(root, seed: int = 0, scale: float = 1.0, force: bool = False,
                       variant: str = "default") -> Path:
    """Write the synthetic data set into `root` (see ``dataset.demo``); return root.

    Returns at once if `root` already holds a complete demo with the same
    version, seed, scale and variant.  A folder with other content is only overwritten
    if it holds an earlier (or interrupted) demo of the same variant, or if `force` is set; even
    then only the demo's own outputs are removed.
    """
    root = Path(root)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    check_variant(variant)
    wanted = _marker(seed, scale, variant)
    if _read_json(root / MARKER_NAME) == wanted:
        return root
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a folder")
        ours = (root / MARKER_NAME).exists() or (root / IN_PROGRESS_NAME).exists()
        if any(root.iterdir()) and not ours and not force:
            raise FileExistsError(
                f"{root} is not empty and holds no demo data set; refusing to overwrite it "
                f"(pass force=True / --force to replace its audio/, eval/, split_setup/ and meta.csv)")
        present = demo_variant(root)
        if ours and present not in (None, variant) and not force:
            raise FileExistsError(
                f"{root} holds the {present} variant of the demo set, not the {variant} one; refusing to replace "
                f"it: write to another folder (python -m dataset.demo --out; the training scripts: another "
                f"--demo_dir), or pass --force (python -m dataset.demo) / force=True to replace it; to finish or "
                f"update it: python -m dataset.demo --out {root} --variant {present}")
        _remove_demo_outputs(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / IN_PROGRESS_NAME).write_text(json.dumps(wanted))

    started = time.perf_counter()
    (root / "audio").mkdir()
    (root / "eval" / "audio").mkdir(parents=True)

    recordings = plan_recordings(scale, variant)
    record = hard_record if variant == "hard" else default_record
    by_key: dict[ClipKey, list[Recording]] = {}
    for recording in recordings:
        by_key.setdefault(recording.key, []).append(recording)

    eval_order = [r for r in recordings if r.part == "eval"]
    # eval files are numbered in a shuffled order, so names reveal nothing
    eval_name = {r: f"audio/{i}.wav"
                 for i, r in zip(keyed_rng(seed, 6).permutation(len(eval_order)), eval_order)}

    meta_rows, split25_rows, test_rows, eval_rows = [], [], [], []
    total_bytes = 0
    for key, group in by_key.items():
        signals = record(key, [r.device for r in group], seed)
        for recording in group:
            if recording.part == "eval":
                name = eval_name[recording]
                path = root / "eval" / name
                device_id = recording.device if recording.device in KNOWN_EVAL_DEVICES else "unknown"
                eval_rows.append((name, device_id))
            else:
                name = key.filename(recording.device)
                path = root / name
                meta_rows.append((name, key.scene, key.identifier, recording.device))
                if recording.part == "split25":
                    split25_rows.append((name, key.scene))
                elif recording.part == "test":
                    test_rows.append((name, key.scene))
            write_wav(path, signals[recording.device])
            total_bytes += path.stat().st_size

    _write_tsv(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), sorted(meta_rows))
    _write_tsv(root / "split_setup" / "split25.csv", ("filename", "scene_label"), sorted(split25_rows))
    _write_tsv(root / "split_setup" / "test.csv", ("filename", "scene_label"), sorted(test_rows))
    _write_tsv(root / "eval" / "evaluation_setup" / "fold1_test.csv", ("filename", "device_id"),
               sorted(eval_rows, key=lambda row: int(row[0][len("audio/"):-len(".wav")])))

    # The marker goes last: an interrupted write is never mistaken for complete.
    (root / MARKER_NAME).write_text(json.dumps(wanted))
    (root / IN_PROGRESS_NAME).unlink()
    name = "" if variant == "default" else f", variant {variant}"
    print(f"demo data set v{DEMO_VERSION} (seed={seed}, scale={scale}{name}) -> {root}: "
          f"{len(split25_rows)} split25, {len(test_rows)} test, "
          f"{len(meta_rows) - len(split25_rows) - len(test_rows)} extra train, {len(eval_rows)} eval clips, "
          f"{total_bytes / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")
    return root


def main(argv=None) -> None:
    """``python -m dataset.demo``: the flags in full, a hint for a mistyped one."""
    parser = StrictParser(prog="python -m dataset.demo", description=DESCRIPTION)
    parser.add_argument("--out", default="demo_data", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the clip counts")
    parser.add_argument("--force", action="store_true",
                        help="replace audio/, eval/, split_setup/ and meta.csv in a non-demo folder")
    parser.add_argument("--variant", choices=VARIANTS, default="default",
                        help="hard: more variety per scene, devices s1-s6 made by impulse responses "
                             "(docs/demo_hard.md)")
    parser.add_argument("--impulse_responses", metavar="FOLDER", default=None,
                        help="also write synthetic device impulse responses there (for --dir_dir): 12; with "
                             "--variant hard 32 of its devices' family, none of them a device's")
    args = parser.parse_args(argv)
    write_demo_dataset(args.out, seed=args.seed, scale=args.scale, force=args.force, variant=args.variant)
    if args.impulse_responses:
        write_demo_impulse_responses(args.impulse_responses, seed=args.seed, variant=args.variant)
