"""Loading a configuration file: every error names its place and key; nothing starts."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from velithon.config import (
    ConfigFileError,
    GatewayConfig,
    RouteSection,
    load_config,
    load_config_file,
)
from velithon.server import ServerConfig

FULL = """
[server]
host = "0.0.0.0"
port = 8080
workers = 2
graceful_timeout = 3
max_body_size = 1048576

[admin]
path = "/_admin"
token = "s3cret"

[logging]
level = "WARNING"
access_log = true

[[routes]]
path = "/api/{path:path}"
targets = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
load_balancing_strategy = "weighted"
weights = [3, 1]
health_check_path = "/health"
health_check_interval = 5
headers_to_add = { "X-Gateway" = "velithon" }
outlier_detection = { consecutive_gateway_failure = 3, base_ejection_time = 10 }

[[proxies]]
targets = ["http://10.0.0.3:8000"]
path_prefix = "/legacy"
upstream_path_prefix = "/v1"
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        load_config(text)
    return [str(issue) for issue in caught.value.issues]


def test_a_full_file_loads_into_the_sections() -> None:
    config = load_config(FULL)
    assert config.server.port == 8080 and config.server.workers == 2
    assert config.server.graceful_timeout == 3.0
    assert isinstance(config.server.graceful_timeout, float)
    assert config.admin.token == "s3cret" and config.admin.enabled
    assert config.logging.level == "WARNING" and config.logging.access_log
    [route] = config.routes
    assert route.targets == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    assert route.weights == (3, 1) and route.health_check_interval == 5.0
    assert route.headers_to_add == {"X-Gateway": "velithon"}
    assert route.outlier_detection is not None
    assert route.outlier_detection.consecutive_gateway_failure == 3
    assert route.key == "gateway_/api/{path:path}"
    [proxy] = config.proxies
    assert proxy.key == "/legacy" and proxy.upstream_path_prefix == "/v1"
    assert config.summary() == "1 route, 1 proxy, 3 targets"
    assert config == load_config(FULL)  # two loads of one file compare equal


def test_unset_sections_are_the_defaults() -> None:
    config = load_config('[[proxies]]\ntargets = ["http://127.0.0.1:9001"]\n')
    assert attrs.evolve(config, proxies=()) == GatewayConfig()
    assert config.server.server_config() == ServerConfig()
    assert config.admin.enabled and config.admin.path == "/_velithon"
    assert config.admin.token is None
    assert config.logging.level == "info" and not config.logging.access_log


def test_the_server_section_builds_the_server_config_with_overrides() -> None:
    server = load_config(FULL).server
    assert server.server_config(port=0) == ServerConfig(
        host="0.0.0.0", port=0, graceful_timeout=3.0, max_body_size=1048576)


def test_an_unknown_key_names_the_closest_known_one() -> None:
    text = FULL.replace("weights = [3, 1]", "wieghts = [3, 1]")
    assert "routes[0].wieghts: unknown key (did you mean 'weights'?)" in errors(text)


def test_unknown_keys_and_sections_everywhere() -> None:
    text = """
    colour = "blue"
    [servr]
    port = 1
    [logging]
    levle = "info"
    [[routes]]
    path = "/a"
    targets = ["http://a:1"]
    zzz = 1
    """
    assert errors(text) == [
        "colour: unknown key",
        "servr: unknown key (did you mean 'server'?)",
        "logging.levle: unknown key (did you mean 'level'?)",
        "routes[0].zzz: unknown key",
    ]


def test_a_key_in_the_wrong_section_says_where_it_lives() -> None:
    assert errors("[server]\naccess_log = true\nlog_level = 'debug'\n") == [
        "server.access_log: unknown key (it is [logging] access_log)",
        "server.log_level: unknown key (it is [logging] level)",
    ]


def test_wrong_types_are_errors_not_conversions_listed_in_file_order() -> None:
    text = """
    [server]
    port = "8000"
    reuse_port = 1
    [[routes]]
    path = "/a"
    targets = ["http://a:1"]
    [[routes]]
    path = "/b"
    targets = ["http://b:1", "http://c:1"]
    weights = [1, "a"]
    timeout_ms = 1.5
    strip_path = "yes"
    max_retries = true
    headers_to_add = { x = 1 }
    [[routes]]
    targets = "http://d:1"
    """
    assert errors(text) == [
        "server.port: expected an integer, got '8000'",
        "server.reuse_port: expected true or false, got 1",
        "routes[1].weights: expected a list of integers, got 'a'",
        "routes[1].timeout_ms: expected an integer, got 1.5",
        "routes[1].strip_path: expected true or false, got 'yes'",
        "routes[1].max_retries: expected an integer, got true",
        "routes[1].headers_to_add: expected a table of strings, got 1",
        "routes[2].targets: expected a list of strings, got 'http://d:1'",
        "routes[2].path: required key missing",
    ]


def test_what_the_facade_refuses_is_reported_at_the_route() -> None:
    text = """
    [[routes]]
    path = "/a"
    targets = ["http://a:1", "http://b:1"]
    load_balancing_strategy = "weighted"
    weights = [1]
    [[routes]]
    path = "/b"
    targets = ["http://a:1"]
    load_balancing_strategy = "fastest"
    [[routes]]
    path = "/c"
    targets = ["http://a:1"]
    load_balancing_strategy = "hash"
    [[routes]]
    path = "no-slash"
    targets = ["http://a:1"]
    [[proxies]]
    targets = ["ftp://a"]
    [[proxies]]
    targets = ["http://a:1"]
    none_healthy = "maybe"
    """
    found = errors(text)
    assert found[0] == ("routes[0]: Weights length must match targets length "
                        "(got 1 weights for 2 targets)")
    assert found[1].startswith("routes[1]: Invalid strategy 'fastest'")
    assert found[2].startswith("routes[2]: The 'hash' strategy needs hash_on")
    assert found[3] == "routes[3]: Route path must start with '/': 'no-slash'"
    assert found[4].startswith("proxies[0]: Invalid target URL: 'ftp://a'")
    assert found[5].startswith("proxies[1]: Invalid none_healthy policy 'maybe'")
    assert len(found) == 6


def test_range_checks_name_the_key() -> None:
    text = """
    [server]
    port = 70000
    workers = 0
    [admin]
    path = "admin"
    [logging]
    level = "loud"
    [[routes]]
    path = "/a"
    targets = ["http://a:1"]
    outlier_detection = { interval = -1 }
    """
    assert errors(text) == [
        "server.port: must be in 0..65535, got 70000",
        "server.workers: must be >= 1, got 0",
        "admin.path: must be a path starting with '/', got 'admin'",
        "logging.level: must be one of critical, error, warning, info, debug, got 'loud'",
        "routes[0].outlier_detection.interval: must be a positive number of seconds "
        "(got -1.0)",
    ]


def test_admin_settings_follow_mount_admins_rules() -> None:
    assert errors('[admin]\npath = "/"\ntoken = " t "\n') == [
        "admin.path: cannot be '/': it would hide every route",
        "admin.token: must be non-empty, without surrounding spaces (leave it out for "
        "read-only)",
    ]


def test_names_reload_relies_on_must_be_unique() -> None:
    text = """
    [[routes]]
    path = "/a"
    targets = ["http://a:1"]
    [[routes]]
    path = "/a"
    targets = ["http://b:1"]
    [[routes]]
    path = "/a"
    name = "second-a"
    methods = ["POST"]
    targets = ["http://b:1"]
    [[proxies]]
    targets = ["http://a:1"]
    path_prefix = "/p/"
    [[proxies]]
    targets = ["http://a:1"]
    path_prefix = "/p"
    """
    assert errors(text) == [
        "routes[1].path: same route name as routes[0] ('gateway_/a'): reload tells routes "
        "apart by name, so give each a distinct name",
        "proxies[1].path_prefix: same path_prefix as proxies[0] ('/p'): the second would "
        "never see a request",
    ]


def test_sections_of_the_wrong_shape() -> None:
    assert errors("server = 1\nroutes = 2\n") == [
        "server: expected a table, got 1",
        "routes: expected an array of tables ([[routes]]), got 2",
    ]
    assert errors("routes = [1]\n") == ["routes[0]: expected a table, got 1"]


def test_a_toml_syntax_error_has_its_line_and_column() -> None:
    assert errors('[server]\nport = 80\n[[routes]\npath = "/"\n') == [
        "line 3, column 9: invalid TOML: expected ']]' at the end of an array declaration"]


def test_the_file_name_prefixes_each_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[[routes]]\npath = "/a"\ntargets = ["http://a:1"]\nwieghts = [1]\n'
                    'timeout_ms = "x"\n')
    with pytest.raises(ConfigFileError) as caught:
        load_config_file(path)
    assert caught.value.lines() == [
        f"{path}: routes[0].wieghts: unknown key (did you mean 'weights'?)",
        f"{path}: routes[0].timeout_ms: expected an integer, got 'x'",
    ]
    assert str(caught.value) == "\n".join(caught.value.lines())


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_config_file(tmp_path / "missing.toml")
    assert caught.value.lines() == [
        f"{tmp_path / 'missing.toml'}: cannot read the file: No such file or directory"]
    (tmp_path / "latin1.toml").write_bytes(b'# caf\xe9\n')
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_config_file(tmp_path / "latin1.toml")


def test_a_route_section_builds_its_route_without_starting_anything() -> None:
    section = RouteSection(path="/a", targets=("http://a:1", "http://b:1"), weights=(2, 1),
                           load_balancing_strategy="weighted")
    route = section.build()
    assert route.path == "/a" and route.targets == ["http://a:1", "http://b:1"]
    assert route.target_weights == {"http://a:1": 2, "http://b:1": 1}
    assert route.balancer is None
