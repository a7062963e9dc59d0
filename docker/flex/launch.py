"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the launcher runs this with every
template parameter and its own pipeline options as `--name=value`; this runs `corebuild build`.

A name whose dashed form is a `corebuild build` flag (`unit_points` -> `--unit-points`) is passed
to corebuild, `true`/`false` for switches; `region_id` is corebuild's `--region`, because the
launcher's `--region` is the Google Cloud region. Everything else (`--project`, `--region`,
`--temp_location`, `--sdk_container_image`, ...) is a Beam option and goes after `--`.
COREBUILD_FLEX_DRY_RUN=1 prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

ALIASES = {"region_id": "--region"}  # template parameter -> corebuild flag, where not just dashed
BEAM_OWNED = {"region", "runner"}  # launcher options that share a name with a corebuild flag


def build_flags() -> dict[str, argparse.Action]:
    from corebuild.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a for a in sub.choices["build"]._actions for s in a.option_strings}


def flag_for(name: str) -> str:
    return ALIASES.get(name, "--" + name.replace("_", "-"))


def command(argv: list[str]) -> list[str]:
    flags = build_flags()
    ours, beam, runner = [], [], "DataflowRunner"
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        action = flags.get(flag_for(name)) if name and name not in BEAM_OWNED else None
        if name == "runner" and eq:
            runner = value
        elif action is None:
            beam.append(arg)
        elif action.nargs == 0:  # a switch: --overwrite=true
            if value.lower() in ("", "true", "1", "yes"):
                ours.append(flag_for(name))
        elif eq:
            ours += [flag_for(name), value]
        else:
            raise SystemExit(f"launch.py: {arg} needs a value (--{name}=VALUE)")
    if not any(a.startswith("--sdk_location") for a in beam):
        beam.append("--sdk_location=container")  # Beam is in the worker image: don't stage it
    return [sys.executable, "-m", "corebuild", "build", *ours, "--runner", runner, "--no-progress", "--", *beam]


def main(argv: list[str]) -> int:
    cmd = command(argv)
    if os.environ.get("COREBUILD_FLEX_DRY_RUN"):
        print(shlex.join(cmd))
        return 0
    home = os.environ.get("COREBUILD_HOME")
    if home:
        os.chdir(home)  # relative paths in the flags (e.g. --cache) mean the image's home; prompts and manifests are package data
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
