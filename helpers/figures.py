"""Redraw the result figures of a finished run from its results.json, without the audio:

    python -m helpers.figures abcd1234                                   # into the run's folder
    python -m helpers.figures abcd1234 --out_dir docs --only accuracy_map_difference

The figures are those of the final test (helpers/outputs/drawing.py): confusion_<system>.png,
accuracy_map_<system>.png and, for a stage-2 run, accuracy_map_difference.png.
"""
import sys
import tempfile
from pathlib import Path

from helpers.base.command_line import StrictParser
from helpers.files import atomic_path
from helpers.outputs.results import find_run_dir, read_results, write_figures


def redraw(run_or_folder, project_name="DCASE25_Task1", out_dir=None, only=None) -> list:
    """Draw the figures of a run into ``out_dir`` (default: the run's folder); returns their paths.
    ``only``: file names (with or without ``.png``) to keep; the others are not written."""
    run_dir = find_run_dir(run_or_folder, project_name)
    results = read_results(run_dir)
    if "confusion" not in results:
        raise SystemExit(f"{run_dir / 'results.json'} holds no confusion counts (written before figures existed): "
                         "run the final test again to get them.")
    out_dir = Path(out_dir) if out_dir else run_dir
    with tempfile.TemporaryDirectory() as scratch:  # draw all, keep the ones asked for
        drawn = write_figures(scratch, results["run_id"], results["confusion"]["systems"])
        wanted = {Path(name).stem for name in only} if only else {p.stem for p in drawn}
        unknown = wanted - {p.stem for p in drawn}
        if unknown:
            raise SystemExit(f"--only {', '.join(sorted(unknown))}: run {results['run_id']} has the figures "
                             f"{', '.join(p.stem for p in drawn)}.")
        paths = []
        for path in drawn:
            if path.stem in wanted:
                with atomic_path(out_dir / path.name) as tmp:
                    tmp.write_bytes(path.read_bytes())
                paths.append(out_dir / path.name)
    return paths


def main(argv=None):
    parser = StrictParser(description=__doc__)
    parser.add_argument("run", help="run id (under --project_name) or run folder")
    parser.add_argument("--project_name", default="DCASE25_Task1", help="folder of the runs")
    parser.add_argument("--out_dir", default=None, help="where to write the PNG files (default: the run's folder)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="draw only these figures")
    args = parser.parse_args(argv)
    try:
        paths = redraw(args.run, args.project_name, args.out_dir, args.only)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    for path in paths:
        print(f"{path}  ({path.stat().st_size / 1000:.0f} kB)")
    return paths


if __name__ == "__main__":
    main()
