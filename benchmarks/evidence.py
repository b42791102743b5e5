"""Evidence that GoodSAM works: the stages of goodsam.experiments.evidence -> docs/results.md.

Writes ``docs/results.md``, ``docs/results.json`` and ``docs/results/*.png``. Stages (data, masks,
scale_sweep, fusion_select, lr_select, eval_before, fusion_eval, run_<name>, diagnosis, overlays, report)
are skipped when their ``WORK/stages/<name>.json`` exists; ``--redo NAME`` reruns one. Every finished
stage's record also goes to ``docs/results/stages.json``: a fresh checkout restores those stages from it
(all but data and masks, whose files later stages read) and runs only the rest.

    python benchmarks/evidence.py [--work outputs/evidence] [--steps 60] [--only STAGE ...] [--redo STAGE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from goodsam.experiments.evidence import Evidence

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "evidence")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--steps", type=int, default=60, help="Optimiser steps per training run.")
    parser.add_argument("--only", nargs="*", help="Run only these stages (default: all).")
    parser.add_argument("--redo", nargs="*", default=[], help="Rerun these stages even if done.")
    args = parser.parse_args(argv)
    Evidence(args.work.resolve(), args.docs, root=REPO, steps=args.steps).run_stages(args.only, args.redo)


if __name__ == "__main__":
    main()
