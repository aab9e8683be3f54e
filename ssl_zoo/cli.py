"""The ``ssl-zoo`` command: train, eval, bench (Hydra apps), report, list."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from ssl_zoo.errors import UserError

USAGE = """usage: ssl-zoo COMMAND [overrides]

  train  [overrides]              pretrain one objective, then evaluate it
  eval   [overrides]              evaluate a model (model=checkpoint|random|pixels|timm|open_clip)
  bench  [suite=NAME] [overrides] run a suite grid; write the tables and report
  report DIR [DIR ...]            rebuild tables/report from results.jsonl files
  concepts --results R.jsonl (--corpus FILE | --counts C.json)
                                  per-class zero-shot accuracy vs concept frequency (fit + plot)
  list   [objectives|backbones|datasets|protocols|suites]

Overrides are Hydra overrides, e.g. `ssl-zoo train method=dino trainer.max_epochs=5`;
`-m` sweeps (`ssl-zoo train -m method=simclr,byol`). `ssl-zoo train --help` shows the config."""


def _fail(command: str, message: str) -> None:
    print(f"ssl-zoo {command}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _task(command: str) -> Callable:
    def run(cfg, run_dir: Path):
        if command == "train":
            from ssl_zoo.train import train

            return train(cfg, run_dir)
        if command == "eval":
            from ssl_zoo.eval.runner import eval_command

            return eval_command(cfg, run_dir)
        from ssl_zoo.bench.runner import bench

        return bench(cfg, run_dir)

    return run


def run_hydra_command(command: str, args: list[str]) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from ssl_zoo.config import register_plugin_configs, split_hydra_flags, validate_overrides

    register_plugin_configs()
    flags, overrides = split_hydra_flags(args)
    if not any(f in ("-h", "--help", "--hydra-help", "--info", "-i") for f in flags):
        try:
            validate_overrides(command, overrides)
        except UserError as exc:
            _fail(command, str(exc))

    task = _task(command)

    @hydra.main(config_path="pkg://ssl_zoo.conf", config_name=command, version_base="1.3")
    def app(cfg) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            task(cfg, run_dir)
        except UserError as exc:
            _fail(command, str(exc))

    sys.argv = [f"ssl-zoo-{command}", *args]
    app()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    try:
        if command in ("train", "eval", "bench"):
            run_hydra_command(command, rest)
        elif command == "list":
            from ssl_zoo.listing import list_command

            list_command(rest)
        elif command == "report":
            from ssl_zoo.bench.report import report_command

            report_command(rest)
        elif command == "concepts":
            from ssl_zoo.study.command import concepts_command

            concepts_command(rest)
        else:
            raise UserError(f"unknown command {command!r}; available: train, eval, bench, report, concepts, list")
    except UserError as exc:
        _fail(command, str(exc))


if __name__ == "__main__":
    main()
