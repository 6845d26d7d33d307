"""Command-line parsing for every command of the project: flags only as written in full, a hint for a
mistyped one, and each flag's default in ``--help``. In the base layer, so that ``python -m dataset.demo``
uses it as the training scripts do."""
import argparse
import difflib
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description (the usage examples) as written and adds each flag's default once: not
    where the help text already speaks of its default, and not for switches or flags without one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.default is False:
            return text
        default = action.default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class StrictParser(argparse.ArgumentParser):
    """An ArgumentParser that takes flags only as written in full. argparse would take ``--n_epoch 3``
    for ``--n_epochs 3`` (and ``--train_device a`` for ``--train_devices a``); here an abbreviated or
    mistyped flag is refused, with the flag it resembles."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        known = list(self._option_string_actions)
        # unknown flags first: their hint matters more than a missing required flag they may be meant for
        mistyped = [token for token in args if token.startswith("--") and token.split("=", 1)[0] not in known]
        if mistyped:
            self.error(unknown_flags_message(mistyped, known))
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(unknown_flags_message(unknown, known))
        return parsed


def unknown_flags_message(unknown, known_flags) -> str:
    """``unrecognized arguments: ...`` with a 'did you mean' hint for each flag like a known one."""
    hints = []
    for token in unknown:
        flag = token.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        longer = [known for known in known_flags if known.startswith(flag)]
        similar = longer or difflib.get_close_matches(flag, known_flags, n=3, cutoff=0.75)
        if similar:
            hints.append(f"{flag}: did you mean {' or '.join(similar)}?")
    message = "unrecognized arguments: " + " ".join(unknown)
    if hints:
        message += " (flags must be written in full; " + "; ".join(hints) + ")"
    return message
