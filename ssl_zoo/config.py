"""Finding and validating the Hydra config before a run starts.

Hydra reports composition errors as multi-line messages with exit code 1;
ssl_zoo's contract is one line and exit code 2. So overrides are checked here
first (every combination of a sweep), with the same config tree Hydra uses.
"""
from __future__ import annotations

import itertools
from importlib.metadata import entry_points
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from ssl_zoo.errors import UserError

CONFIG_MODULE = "ssl_zoo.conf"
MAX_CHECKED_COMBINATIONS = 64
HYDRA_FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir",
                          "--info", "-c", "--cfg", "-p", "--package", "--experimental-rerun"}


class PluginConfigSearchPath(SearchPathPlugin):
    """Adds the config packages of installed plugins to Hydra's search path.

    A plugin declares ``[project.entry-points."ssl_zoo.configs"] NAME = "pkg.conf"``
    where ``pkg.conf`` holds ``method/<name>.yaml``. Registered explicitly
    (not through the ``hydra_plugins`` namespace) so it also works from an
    editable install.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for ep in sorted(entry_points(group="ssl_zoo.configs"), key=lambda e: e.name):
            search_path.append(provider=f"ssl_zoo-plugin-{ep.name}", path=f"pkg://{ep.value}")


def register_plugin_configs() -> None:
    """Call before composing ssl_zoo's config with Hydra (the CLI does)."""
    Plugins.instance().register(PluginConfigSearchPath)


def split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(flags for Hydra such as -m, overrides)."""
    flags, overrides, it = [], [], iter(args)
    for a in it:
        if a.startswith("-"):
            flags.append(a)
            if a in HYDRA_FLAGS_WITH_VALUE and "=" not in a:
                nxt = next(it, None)
                if nxt is not None:
                    flags.append(nxt)
        else:
            overrides.append(a)
    return flags, overrides


def _describe(value: Any) -> str | None:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return None


def _type_ok(default: Any, new: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(new, bool)
    if isinstance(default, int):
        return isinstance(new, int) and not isinstance(new, bool)
    if isinstance(default, float):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    return True


def validate_overrides(config_name: str, overrides: list[str]) -> None:
    """Raise UserError (one line) for an unknown group option, an unknown key,
    or a value of the wrong type, in any combination of a sweep."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise UserError(f"malformed override: {str(exc).strip().splitlines()[0]}") from None

    register_plugin_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = set(loader.list_groups(""))
        choices: list[list[str]] = []
        for o in parsed:
            key = o.get_key_element()
            values = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.get_value_element_as_str()]
            if o.key_or_group in groups and not o.is_delete():
                options = loader.get_group_options(o.key_or_group)
                for v in values:
                    if v not in options:
                        raise UserError(f"unknown {o.key_or_group} {v!r}; available: {', '.join(sorted(options))}")
            choices.append([f"{key}={v}" for v in values])
        combos = itertools.islice(itertools.product(*choices), MAX_CHECKED_COMBINATIONS)
        for combo in combos:
            combo = list(combo)
            group_only = [c for c, o in zip(combo, parsed) if o.key_or_group in groups]
            try:
                cfg = compose(config_name, overrides=combo)
                base = compose(config_name, overrides=group_only)
            except HydraException as exc:
                raise UserError(_first_line(exc)) from None
            for c, o in zip(combo, parsed):
                if o.key_or_group in groups or o.key_or_group.startswith("hydra"):
                    continue
                default = OmegaConf.select(base, o.key_or_group, default=None)
                new = OmegaConf.select(cfg, o.key_or_group, default=None)
                if not _type_ok(default, new):
                    raise UserError(f"{c}: expected {_describe(default)} (default: {default})")
    GlobalHydra.instance().clear()


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = " ".join(lines[:2]) if lines else type(exc).__name__
    return msg.replace("\t", " ")
