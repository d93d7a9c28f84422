"""`seg-perception`: train, evaluate, predict, export, make-bag, replay, evaluate-bag.

Each subcommand is a thin argument parser over the ROS-free core; expected
failures (bad files, bad config) print one clear line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from .checkpoint import CheckpointError
from .classes import ClassTableError
from .datasets import DatasetError
from .models import UnknownModelError
from .training import ConfigError, TrainConfig

EXPECTED_ERRORS = (CheckpointError, ClassTableError, DatasetError, UnknownModelError, ConfigError,
                   FileNotFoundError)


def _pair(kind):
    def parse(text: str):
        parts = text.replace("x", ",").split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two values like 480x360, got '{text}'")
        return tuple(kind(p) for p in parts)
    return parse


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (YAML config and/or flags)",
                       description="Train a segmentation model. Flags override keys of --config.")
    p.add_argument("--config", help="YAML file with TrainConfig keys")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    fields = TrainConfig.__dataclass_fields__
    for name, f in fields.items():
        flag = "--" + name.replace("_", "-")
        default_type = type(f.default) if f.default is not None else str
        if name in ("crop",):
            p.add_argument(flag, type=_pair(int), help="width x height, e.g. 480x360")
        elif name in ("scale",):
            p.add_argument(flag, type=_pair(float), help="min,max random scale")
        elif name in ("max_images", "patience", "max_steps", "threads"):
            p.add_argument(flag, type=int)
        elif name in ("dropout", "time_budget_min"):
            p.add_argument(flag, type=float)
        else:
            p.add_argument(flag, type=default_type)


def run_train(args) -> int:
    from .training import Trainer
    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    cfg = TrainConfig.from_dict({**cfg.__dict__, **overrides}, source="flags")
    result = Trainer(cfg, resume=args.resume, progress=not args.no_progress).run()
    print(f"best val mIoU {100 * max(result['best_miou'], 0):.2f} at epoch {result['best_epoch']} "
          f"({result['stop_reason']})")
    return 0


COMMANDS = {"train": (add_train, run_train)}
from .cli_bags import BAG_COMMANDS; COMMANDS.update(BAG_COMMANDS)  # noqa: E402,E702  make-bag, replay, evaluate-bag


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-perception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except EXPECTED_ERRORS as exc:
        print(f"seg-perception {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seg-perception {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
