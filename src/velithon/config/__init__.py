"""``velithon.config``: run a gateway from a TOML file, check it, reload it live.

::

    from velithon.config import build_gateway, load_config_file

    config = load_config_file("gateway.toml")   # ConfigFileError lists every problem
    gateway = build_gateway(config, path="gateway.toml")
    serve(gateway.app, config=config.server.server_config(),  # [server], [server.tls]
          on_reload=gateway.request_reload)  # SIGHUP re-reads the file

The file's shape, the reload rules and the errors are in ``docs/config.md``.
"""

from __future__ import annotations

from .._exports import fixup_module_metadata
from ._gateway import ConfigGateway as ConfigGateway
from ._gateway import MountAdmin as MountAdmin
from ._gateway import ReloadRefused as ReloadRefused
from ._gateway import build_gateway as build_gateway
from ._issues import ConfigFileError as ConfigFileError
from ._issues import ConfigIssue as ConfigIssue
from ._load import load_config as load_config
from ._load import load_config_file as load_config_file
from ._plan import AddFacade as AddFacade
from ._plan import ReloadPlan as ReloadPlan
from ._plan import RemoveFacade as RemoveFacade
from ._plan import ReplaceFacade as ReplaceFacade
from ._plan import SetLogLevel as SetLogLevel
from ._plan import UpdateTargets as UpdateTargets
from ._plan import plan_reload as plan_reload
from ._schema import config_schema as config_schema
from ._schema import schema_text as schema_text
from ._sections import AdminSection as AdminSection
from ._sections import GatewayConfig as GatewayConfig
from ._sections import LoggingSection as LoggingSection
from ._sections import ProxySection as ProxySection
from ._sections import RouteSection as RouteSection
from ._sections import ServerSection as ServerSection
from ._sections import TLSSection as TLSSection

__all__ = [
    "AddFacade",
    "AdminSection",
    "ConfigFileError",
    "ConfigGateway",
    "ConfigIssue",
    "GatewayConfig",
    "LoggingSection",
    "MountAdmin",
    "ProxySection",
    "ReloadPlan",
    "ReloadRefused",
    "RemoveFacade",
    "ReplaceFacade",
    "RouteSection",
    "ServerSection",
    "SetLogLevel",
    "TLSSection",
    "UpdateTargets",
    "build_gateway",
    "config_schema",
    "load_config",
    "load_config_file",
    "plan_reload",
    "schema_text",
]

fixup_module_metadata(__name__, globals())
