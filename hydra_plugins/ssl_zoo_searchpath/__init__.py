"""Adds the config packages of installed ssl_zoo plugins to Hydra's search path.

A plugin declares, in its pyproject::

    [project.entry-points."ssl_zoo.configs"]
    my_plugin = "my_plugin.conf"      # a package holding method/<name>.yaml

and Hydra then finds ``method=<name>`` next to the built-in objectives.
"""
from importlib.metadata import entry_points

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SslZooPluginSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for ep in sorted(entry_points(group="ssl_zoo.configs"), key=lambda e: e.name):
            search_path.append(provider=f"ssl_zoo-plugin-{ep.name}", path=f"pkg://{ep.value}")
