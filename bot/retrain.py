"""``python -m bot.retrain --corrections var/corrections.json``: accepted corrections in, a
proven model out.

1. The corrections become training data (``bot.corrections``: masked, validated on a copy,
   checked against the rules, trained; the project's files are replaced only if all passes).
   The model that check trained is kept in ``models/`` (Rasa's cache makes it quick).
   It is renamed ``corrections-<UTC time>.tar.gz`` there, so every retraining leaves its own
   model to deploy or roll back to.
2. ``bot.prove`` compares it with the model in service (``--in-service``; default: the one
   ``bot.serve`` has live, else the newest in ``models/``) on the corrections' test stories
   and the hand-written ones.

Prints one JSON report ``{"write": ..., "proof": ...}``; exit code 0 when the data was written
and nothing regressed, 1 otherwise (``proof.deploy`` says whether to deploy). ``make retrain``
exports the accepted corrections from the gateway first and records them as exported after;
the console's "Retrain" button does the same through the gateway and the supervisor
(``bot/control.py``), which passes this output on line by line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corrections", required=True, type=Path)
    parser.add_argument("--project", default=PROJECT_ROOT, type=Path)
    parser.add_argument("--in-service", type=Path,
                        help="the live model to compare with (default: the one bot.serve "
                             "has live, var/live-model, else the newest in --models)")
    parser.add_argument("--models", type=Path, help="where models are kept (default: "
                        "the project's models/)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune the model in service where Rasa allows it (full "
                             "training otherwise; slower than a cached full training for "
                             "relabels and text edits: docs/performance.md)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    report_fd = os.dup(1)  # Rasa and TensorFlow print to stdout; the report alone goes there
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from bot.corrections.records import parse_records
    from bot.corrections.writer import Options, run
    from bot.prove import prove
    from bot.processes import StartupError, model_in_service

    models = (args.models or project / "models").resolve()
    try:
        in_service: Optional[Path] = (args.in_service or model_in_service(project, models)
                                      ).resolve()
    except StartupError:  # no model yet: the data is written, nothing to prove against
        in_service = None
    report: Dict[str, object] = {}
    corrections = parse_records(json.loads(args.corrections.read_text("utf-8")))
    print(f"writing {len(corrections)} correction(s) as training data, then training",
          flush=True)
    written = run(corrections, Options(
        project=project, keep_model=models,
        finetune_from=in_service if args.finetune else None))
    if written.model:  # a name of its own: the next retraining must not overwrite it
        named = models / time.strftime("corrections-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime())
        os.replace(written.model, named)
        written.model = str(named)
    report["write"] = {**written.as_dict(), "model": Path(written.model).name
                       if written.model else None}
    code = 1
    if not corrections:
        report["proof"] = None
        code = 0
    elif written.ok and written.model and in_service:
        print(f"proving {Path(written.model).name} against {in_service.name}", flush=True)
        proof = prove(project, in_service, Path(written.model))
        report["proof"] = proof
        code = 0 if proof["deploy"] else 1
    with os.fdopen(report_fd, "w") as out:
        json.dump(report, out, indent=2, ensure_ascii=False)
        out.write("\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
