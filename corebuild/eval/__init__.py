"""`corebuild eval`: what a build's descriptions are worth. `retrieval` trains a small text→aerial
dual encoder on a split and reports Recall@K beside chance; `fidelity` checks a demo build's
descriptions against the synthetic world's ground truth. Each module owns its arguments."""

from __future__ import annotations

import argparse
import importlib

COMMANDS = {
    "retrieval": ("corebuild.eval.retrieval", "text→aerial retrieval baseline: Recall@1/5/10, median rank, chance"),
    "fidelity": ("corebuild.eval.fidelity", "descriptions against the synthetic world's ground truth: precision per claim type"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", required=True)
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        importlib.import_module(module).add_arguments(sp)
        sp.set_defaults(eval_module=module)


def main(args: argparse.Namespace) -> int:
    return importlib.import_module(args.eval_module).main(args)
