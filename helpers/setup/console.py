"""The console: messages for the user (printed once per distributed run), third-party chatter kept
out, and errors the user must fix shown as their message instead of a traceback."""
import logging
import sys
import warnings

from lightning.pytorch.utilities import rank_zero_only

from dataset.audio import AudioError
from helpers.base.errors import UserError
from models.registry import NetworkError

rank_zero_print = rank_zero_only(print)  # a message for the user, once per distributed run


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


class _DropLightningTips(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("💡 Tip")


def quiet_console() -> None:
    """Keep the console to the progress bars, the project's messages and what a user can act on."""
    # each run has a checkpoint folder of its own; stage 2 keeps its container there beside the phase file
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning 2.6 with torch 2.11 warns about its own code on every fit
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in log.filters):  # advertising for Lightning's cloud
            log.addFilter(_DropLightningTips())


def run_cli(main):
    """Run a command's ``main``; a problem the user must fix ends it with its message, not a traceback."""
    try:
        return main()
    except (UserError, AudioError, NetworkError) as err:
        sys.exit(f"error: {err}")
