"""Runs side by side, with mean ± std over runs that differ only in their seed:

    python -m helpers.compare_runs base_s1 base_s2 base_s3 kd_s1 kd_s2 kd_s3    # run ids under --project_name
    python -m helpers.compare_runs DCASE25_Task1/abcd1234 --out my_comparison   # or run folders

Prints a Markdown table, one row per run (or seed sweep) and system: macro-average accuracy, the device
groups (real, seen, unseen), every device, and the flags in which the runs differ. Writes it to
<out>.md and a bar chart of macro-average and group accuracies to <out>.png (files this command did not
write are never replaced). The logic: helpers/outputs/comparison.py.
"""
import sys

from helpers.base.command_line import StrictParser
from helpers.outputs.comparison import compare


def main(argv=None):
    parser = StrictParser(description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_FOLDER",
                        help="run ids (under --project_name) or run folders")
    parser.add_argument("--project_name", default="DCASE25_Task1", help="folder of the runs given by id")
    parser.add_argument("--out", default="comparison", help="writes <out>.md (the table) and <out>.png (the chart)")
    args = parser.parse_args(argv)
    try:
        table = compare(args.runs, args.project_name, args.out)
    except (FileNotFoundError, FileExistsError) as err:
        sys.exit(f"error: {err}")
    print(table)
    print(f"Written: {args.out}.md, {args.out}.png")
    return table


if __name__ == "__main__":
    main()
