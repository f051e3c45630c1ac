"""What the Rasa model makes of each held-out NLU example, for ``bench/triage.py --project``.

    .venv/rasa/bin/python bench/holdout_parses.py [--model models/X.tar.gz]

Parses every example of ``tests/nlu_holdout/`` (never trained on) with the model in service
(default: the one ``bot.serve`` would serve) and prints one JSON object per line:
``{"text", "intent", "set", "parse"}``, ``intent`` being the example's true intent, ``set`` the
folder (``nlu_holdout``, or ``out_of_scope`` with ``--out-of-scope``) and ``parse`` Rasa's whole
parse result (intent, intent_ranking, entities). Runs in the Rasa environment; the
triage reads the lines in the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bot.serve import model_in_service  # noqa: E402
from bot.tune_fallback import holdout_examples, parse_all  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out-of-scope", action="store_true",
                        help="also the questions of tests/out_of_scope/ (intent out_of_scope)")
    args = parser.parse_args(argv)
    model = args.model or model_in_service(PROJECT_ROOT)
    examples = [(text, intent, "nlu_holdout")
                for text, intent in holdout_examples(PROJECT_ROOT / "tests" / "nlu_holdout")]
    if args.out_of_scope:
        examples += [(text, intent, "out_of_scope") for text, intent in
                     holdout_examples(PROJECT_ROOT / "tests" / "out_of_scope")]
    parses = asyncio.run(parse_all(model, [text for text, _, _ in examples]))
    for (text, intent, folder), parse in zip(examples, parses):
        print(json.dumps({"text": text, "intent": intent, "set": folder, "parse": parse}))


if __name__ == "__main__":
    main()
