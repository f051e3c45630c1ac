"""``python -m bot.corrections write --input corrections.json [--project .] [--dry-run]
[--skip-training] [--keep-model DIR] [--finetune-from MODEL.tar.gz] [--epoch-fraction F]
[--verbose]``: prints a JSON report on stdout; exit code 0 when the corrections were written
(or, with --dry-run, would be), 1 when they were refused. Logs at WARNING on stderr unless
``LOG_LEVEL`` or ``--verbose`` (``-vv``: debug) raises it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from bot import log_level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot.corrections")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="turn accepted corrections into training data")
    write.add_argument("--input", required=True, type=Path,
                       help="JSON list of accepted correction records ('-' for stdin)")
    write.add_argument("--project", default=Path("."), type=Path,
                       help="the Rasa project's root (default: the current directory)")
    write.add_argument("--dry-run", action="store_true",
                       help="check everything, write nothing")
    write.add_argument("--skip-training", action="store_true",
                       help="skip the real training run (validator and rule check still run)")
    write.add_argument("--keep-model", type=Path, default=None,
                       help="keep the model the check trained in this folder")
    write.add_argument("--finetune-from", type=Path, default=None, metavar="MODEL.tar.gz",
                       help="fine-tune this model (the one in service) in the training check; "
                            "a full training when Rasa will not fine-tune it")
    write.add_argument("--epoch-fraction", type=float, default=None,
                       help="the part of the configured epochs a fine-tuning run trains "
                            "(default: 0.2)")
    write.add_argument("--validator-results", type=Path, default=None, metavar="DIR",
                       help="keep Rasa's validator's results per project content in DIR (as "
                            "bot.retrain does in var/validator-results): the unchanged project "
                            "is validated once, not on every run")
    write.add_argument("-v", "--verbose", action="count", default=0,
                       help="log at INFO (-vv: DEBUG) instead of LOG_LEVEL (default WARNING)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # Rasa and TensorFlow print to stdout; the report alone goes there.
    report_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_level.configure(args.verbose)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from bot.corrections.records import RecordError, parse_records
    from bot.corrections.writer import Options, Report, run

    report: Report
    try:
        raw = sys.stdin.read() if str(args.input) == "-" else args.input.read_text("utf-8")
        corrections = parse_records(json.loads(raw))
        epochs = {} if args.epoch_fraction is None else {"epoch_fraction": args.epoch_fraction}
        report = run(corrections, Options(project=args.project, dry_run=args.dry_run,
                                          skip_training=args.skip_training,
                                          keep_model=args.keep_model,
                                          finetune_from=args.finetune_from,
                                          validator_results=args.validator_results,
                                          **epochs))
    except (OSError, ValueError) as exc:  # unreadable input, bad JSON, RecordError
        report = Report(errors=[str(exc) if isinstance(exc, RecordError)
                                else f"{type(exc).__name__}: {exc}"])
    with os.fdopen(report_fd, "w") as out:
        json.dump(report.as_dict(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
