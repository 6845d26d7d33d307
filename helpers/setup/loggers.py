"""Where a run's curves go: Weights & Biases, online with credentials and offline without (never a
login prompt), or CSV files with ``--wandb_mode disabled``."""
import netrc
import os
import time

import wandb
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from helpers.setup.console import rank_zero_print


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested=None) -> str:
    """``--wandb_mode`` if given, else ``$WANDB_MODE``, else online with credentials and offline
    without them, so that a run never stops at a login prompt."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode in ("online", "offline", "disabled"):
        return mode
    if mode == "dryrun":
        return "offline"
    return "online" if wandb_has_credentials() else "offline"


def make_logger(args, run_id: str):
    """``(logger, mode)``: Weights & Biases (online or offline), or a CSV file when disabled. Each start
    of a script is a wandb run of its own, with the run id as its id; close it with ``close_logger``. An
    online run whose server does not answer within ``--wandb_init_timeout`` seconds logs offline instead:
    logging never stops training."""
    mode = resolve_wandb_mode(args.wandb_mode)
    if mode == "disabled":  # one folder per start, so a resumed run keeps the metrics logged before
        return CSVLogger(save_dir=args.project_name, name=run_id, version=time.strftime("%Y%m%d-%H%M%S")), mode
    timeout = getattr(args, "wandb_init_timeout", 30)
    if mode == "online":
        logger = _wandb_logger(args, run_id, mode, timeout)
        try:
            logger.experiment  # noqa: B018 (starts the run now, where a failure can be caught)
            return logger, mode
        except wandb.Error as err:
            wandb.teardown()  # the service still holds the run id of the attempt
            reason = str(err).splitlines()[0]
            rank_zero_print(f"wandb: no answer from the server within {timeout:g} s ({reason}); this run logs "
                            "offline instead.")
            mode = "offline"
    logger = _wandb_logger(args, run_id, mode, timeout)
    rank_zero_print(f"wandb logs offline; see the curves with: wandb leet; upload the run later with: "
                    f"wandb sync wandb/offline-run-*-{run_id}")
    return logger, mode


def _wandb_logger(args, run_id: str, mode: str, timeout: float) -> WandbLogger:
    # Lightning would log into a wandb run still open in this process (one that stopped with an error)
    wandb.finish()
    os.environ["WANDB_MODE"] = mode  # also stops wandb from asking for a login offline
    # offline, wandb's closing summary of every metric only repeats the console; the line above says how to upload
    return WandbLogger(project=args.project_name, name=args.experiment_name, id=run_id, mode=mode,
                       resume="allow", save_dir=".",
                       config=dict(vars(args)),
                       settings=wandb.Settings(quiet=mode == "offline", init_timeout=timeout))


def close_logger(logger) -> None:
    """End the run's wandb run. Without this, a second run started in the same process (scripts/demo.py
    runs both stages) would log into this one: its config, its metrics, its id."""
    if isinstance(logger, WandbLogger):
        wandb.finish()
