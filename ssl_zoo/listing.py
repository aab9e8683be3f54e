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


def _data_configs(names: list[str]) -> dict[str, dict]:
    """Each dataset's resolved default ``data`` config (None where it has none)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from ssl_zoo.config import register_plugin_configs

    register_plugin_configs()
    GlobalHydra.instance().clear()
    out = {}
    with initialize_config_module("ssl_zoo.conf", version_base="1.3"):
        options = set(GlobalHydra.instance().config_loader().get_group_options("data"))
        for n in names:
            try:
                out[n] = OmegaConf.to_container(compose("eval", overrides=[f"data={n}"]).data, resolve=True) \
                    if n in options else None
            except Exception as exc:  # a broken plugin config must not hide the other datasets
                out[n] = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    GlobalHydra.instance().clear()
    return out


def _datasets() -> list[str]:
    """Name, size, classes and whether its files are here (loaders carry a DatasetSpec)."""
    names = DATASETS.names()
    configs = _data_configs(names)
    lines = []
    for n in names:
        spec = getattr(DATASETS.get(n), "spec", None)
        cfg = configs[n]
        if cfg is None or "error" in cfg:
            where = f"config: {'MISSING' if cfg is None else 'broken: ' + cfg['error']}"
        else:
            where = f"available: {spec.availability(cfg) if spec else '?'}"
        about = f"{spec.title}; {spec.size}; classes: {spec.classes}" if spec else "(no description)"
        lines.append(f"{n:<14} {about}; {where}; from {DATASETS.source(n)}")
    return lines


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
