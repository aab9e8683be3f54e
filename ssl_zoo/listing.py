"""``ssl-zoo list``: what is installed and selectable."""
from __future__ import annotations

from ssl_zoo.errors import UserError
from ssl_zoo.registry import DATASETS, OBJECTIVES


def _config_options(group: str) -> list[str]:
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ssl_zoo.config import register_plugin_configs

    register_plugin_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("ssl_zoo.conf", version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    GlobalHydra.instance().clear()
    return sorted(options)


def _objectives() -> list[str]:
    configs = set(_config_options("method"))
    return [f"{n:<12} from {OBJECTIVES.source(n):<14} config: {'method/' + n + '.yaml' if n in configs else 'MISSING'}"
            for n in OBJECTIVES.names()]


def _datasets() -> list[str]:
    return [f"{n:<14} from {DATASETS.source(n)}" for n in DATASETS.names()]


def _backbones() -> list[str]:
    import timm

    lines = [f"{n:<12} (conf/backbone/{n}.yaml)" for n in _config_options("backbone")]
    return lines + [f"... or any of the {len(timm.list_models())} timm models: backbone.name=TIMM_NAME"]


def _protocols() -> list[str]:
    from ssl_zoo.eval.protocols import PROTOCOLS

    return sorted(PROTOCOLS)


SECTIONS = {
    "objectives": _objectives,
    "datasets": _datasets,
    "backbones": _backbones,
    "protocols": _protocols,
    "suites": lambda: _config_options("suite"),
}


def list_command(args: list[str]) -> None:
    wanted = args or list(SECTIONS)
    for name in wanted:
        if name not in SECTIONS:
            raise UserError(f"unknown list section {name!r}; available: {', '.join(SECTIONS)}")
    for name in wanted:
        print(f"{name}:")
        for line in SECTIONS[name]():
            print(f"  {line}")
