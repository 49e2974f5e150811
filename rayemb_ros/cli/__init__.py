"""`rayemb`: the command-line tool, a thin dispatcher to one module per subcommand.

The command line sits above both the ROS-free core and the ROS shell. Each subcommand lives in
its own module of this package, which provides ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen one is imported, so `rayemb --help` is instant and no
subcommand pays for another's imports. Arguments from ``--ros-args`` on are kept away from
argparse and handed to the subcommand as ``args.ros_args`` (for rclpy).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rayemb_ros import __version__
from rayemb_ros.errors import InputError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "node": ("rayemb_ros.cli.node", "run the ROS 2 registration node"),
    "simulate": ("rayemb_ros.cli.simulate", "render a simulated fluoroscopy bag from a CT"),
    "train": ("rayemb_ros.cli.train", "train the ray-embedding encoder on a CT"),
    "anatomy": ("rayemb_ros.cli.anatomy", "make a new patient from a CT: deformed, resized, turned, cropped, with metal"),
    "prepare": ("rayemb_ros.cli.prepare", "prepare a patient's CT before surgery: scene, optional fine-tune, self-check"),
    "replay": ("rayemb_ros.cli.replay", "register every frame of a bag and evaluate"),
    "benchmark": ("rayemb_ros.cli.benchmark", "compare the registration methods on simulated frames"),
    "speed": ("rayemb_ros.cli.speed", "time the pieces on this machine: template bank, training pairs, preload, frame -> pose"),
    "demo": ("rayemb_ros.cli.demo", "the main job on the bundled CT: simulate, register through the node, report"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help; the example at the end kept as written."""


def main(argv: list[str] | None = None) -> int:
    """Run ``rayemb ARGV``; its exit code. An InputError (a bad CT, checkpoint, bag, parameter)
    is one line `rayemb <command>: error: ...` and exit code 2, like argparse's own; any other
    exception is a bug and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    argv, ros_args = argv[:split], argv[split:]
    # Without a sourced ROS setup, the ament index is this environment's prefix (the venv).
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

    parser = argparse.ArgumentParser(prog="rayemb", description="C-arm pose from fluoroscopy (RayEmb) on ROS 2.",
                                     epilog="example: rayemb demo --out out/demo   (rayemb COMMAND --help for each)")
    parser.add_argument("--version", action="version", version=f"rayemb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {name: commands.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
                  for name, (_, text) in SUBCOMMANDS.items()}
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        module_name = SUBCOMMANDS[name][0]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a missing dependency, not a missing subcommand
            parser.error(f"'{name}' is not available in this version of rayemb_ros")
        module.add_arguments(subparsers[name])
        subparsers[name].set_defaults(run=module.run)
    args = parser.parse_args(argv)
    args.ros_args = ros_args
    try:
        return args.run(args)
    except InputError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"rayemb {args.command}: error: {first}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
