r"""Export a trained run as a DCASE 2025 Task 1 submission: the organisers' 2025 inference package.

    python export_submission.py --ckpt_id <stage-2 run id or .ckpt> --submission_name Lastname_INST_task1 \
        --submission_index 1 [--out_dir submissions]

writes (or extends) the package folder <out_dir>/<submission_name>/; install it with pip and check it
with its test_complexity.py and evaluate_submission.py before submitting (docs/submission.md).
"""
import sys

from helpers.base.command_line import StrictParser
from helpers.base.errors import UserError
from helpers.outputs.submission import export_submission


def build_parser():
    parser = StrictParser(description=__doc__)
    parser.add_argument("--ckpt_id", type=str, required=True, help="stage-2 run id, or the path of a .ckpt file")
    parser.add_argument("--submission_name", type=str, required=True,
                        help="submission label: <Lastname>_<INSTITUTE>_task1, e.g. Schmid_CPJKU_task1")
    parser.add_argument("--submission_index", type=int, required=True, help="1 to 4")
    parser.add_argument("--out_dir", type=str, default="submissions",
                        help="the package folder is <out_dir>/<submission_name>/")
    parser.add_argument("--project_name", type=str, default="DCASE25_Task1", help="where run ids are looked up")
    parser.add_argument("--split_dir", type=str, default=None,
                        help="folder with test.csv, the development-test split to package; downloaded there if "
                             "missing (default: the run's --split_dir, else split_setup)")
    parser.add_argument("--ckpt_prefix", type=str, default=None, metavar="PREFIX",
                        help="where the checkpoint holds several networks, the prefix of the one to export")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing submission index (and shared files that differ)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        package_dir = export_submission(args.ckpt_id, args.submission_name, args.submission_index, args.out_dir,
                                        args.project_name, args.split_dir, args.overwrite,
                                        ckpt_prefix=args.ckpt_prefix)
    except UserError as err:
        sys.exit(f"error: {err}")
    print(f"Package folder: {package_dir}  (pip install {package_dir}; then run its test_complexity.py and "
          "evaluate_submission.py)")
    return package_dir


if __name__ == "__main__":
    main()
