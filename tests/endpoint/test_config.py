"""config.yaml validation: every problem names its key and line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from fx_endpoint.config import ConfigError, load_config, parse_config, render_template

URL = "service_url: http://127.0.0.1:8888/fx/api/v2/\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "ep/config.yaml")
    return [p.format(Path("ep/config.yaml")) for p in info.value.problems]


def test_template_is_valid_and_commented():
    text = render_template("default", "http://127.0.0.1:8888/fx/api/v2/", 3)
    config = parse_config(text)
    assert config.service_url == "http://127.0.0.1:8888/fx/api/v2/"
    assert config.engine.type == "process" and config.engine.max_workers == 3
    assert config.heartbeat_period == 5 and config.heartbeat_threshold == 30
    assert config.max_retries_on_system_failure == 1
    assert config.worker_init == "" and config.available_accelerators == ()
    assert config.sandbox == "none"
    assert text.count("\n#") > 10


def test_defaults():
    config = parse_config(URL)
    assert config.engine.max_workers == (os.cpu_count() or 1)
    assert config.engine.prefetch_capacity >= 32
    assert config.capacity == config.engine.max_workers + config.engine.prefetch_capacity
    config = parse_config(URL + "available_accelerators: [0, '1', 2]\n")
    assert config.available_accelerators == ("0", "1", "2")
    assert config.engine.max_workers == 3


def test_service_url_gets_a_trailing_slash():
    assert parse_config("service_url: https://hub.example/fx/api/v2").service_url == (
        "https://hub.example/fx/api/v2/"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL + "max_worker: 3\n", "ep/config.yaml:2: max_worker: unknown key"),
        (
            URL + "engine:\n  max_worker: 3\n",
            "ep/config.yaml:3: engine.max_worker: unknown key; did you mean 'max_workers'?",
        ),
        (
            URL + "heartbeat_perod: 3\n",
            "ep/config.yaml:2: heartbeat_perod: unknown key; did you mean 'heartbeat_period'?",
        ),
        (
            URL + "engine:\n  max_workers: four\n",
            "ep/config.yaml:3: engine.max_workers: must be an integer >= 1, got 'four'",
        ),
        (
            URL + "engine:\n  max_workers: 0\n",
            "ep/config.yaml:3: engine.max_workers: must be an integer >= 1, got 0",
        ),
        (
            URL + "engine:\n  max_workers: true\n",
            "ep/config.yaml:3: engine.max_workers: must be an integer >= 1, got True",
        ),
        (
            URL + "engine:\n  type: proces\n",
            (
                "ep/config.yaml:3: engine.type: must be one of "
                "process, parsl (did you mean 'process'?), got 'proces'"
            ),
        ),
        (
            URL + "engine: [1, 2]\n",
            "ep/config.yaml:2: engine: must be a mapping of keys to values, got a list",
        ),
        (
            URL + "engine:\n  prefetch_capacity: -1\n",
            "ep/config.yaml:3: engine.prefetch_capacity: must be an integer >= 0, got -1",
        ),
        (
            URL + "heartbeat_period: 0\n",
            "ep/config.yaml:2: heartbeat_period: must be a number of seconds > 0, got 0",
        ),
        (
            URL + "heartbeat_period: 10\nheartbeat_threshold: 5\n",
            "ep/config.yaml:3: heartbeat_threshold: must be greater than heartbeat_period (10), got 5",
        ),
        (
            URL + "heartbeat_period: 60\n",
            "ep/config.yaml:2: heartbeat_period: must be less than heartbeat_threshold (30.0), got 60",
        ),
        (
            URL + "max_retries_on_system_failure: -1\n",
            "ep/config.yaml:2: max_retries_on_system_failure: must be an integer >= 0, got -1",
        ),
        (
            URL + "max_retries_on_system_failure: 1.5\n",
            "ep/config.yaml:2: max_retries_on_system_failure: must be an integer >= 0, got 1.5",
        ),
        (
            URL + "worker_init: [a, b]\n",
            "ep/config.yaml:2: worker_init: must be text (shell lines), got a list",
        ),
        (
            URL + "available_accelerators: gpu0\n",
            "ep/config.yaml:2: available_accelerators: must be a list of accelerator ids",
        ),
        (
            URL + "available_accelerators: ['0', '0']\n",
            "ep/config.yaml:2: available_accelerators: lists '0' twice",
        ),
        (
            URL + "available_accelerators:\n  - 0\n  - {a: 1}\n",
            "ep/config.yaml:4: available_accelerators: must be an accelerator id",
        ),
        (
            URL + "sandbox: docker\n",
            "ep/config.yaml:2: sandbox: must be one of none, bwrap, got 'docker'",
        ),
        (
            URL + "engine:\n  provider: {type: slurm}\n",
            "ep/config.yaml:3: engine.provider: applies only to engine type parsl",
        ),
        (
            URL + "engine:\n  type: parsl\n  provider: {type: slurmm}\n",
            (
                "ep/config.yaml:4: engine.provider.type: must be one of local, slurm, pbspro, condor, kubernetes "
                "(did you mean 'slurm'?), got 'slurmm'"
            ),
        ),
        (
            URL + "engine:\n  type: parsl\n  provider: {partition: x}\n",
            "ep/config.yaml:4: engine.provider.type: is required",
        ),
        (
            URL + "engine:\n  type: parsl\n  min_blocks: 3\n  max_blocks: 2\n",
            "ep/config.yaml:4: engine.min_blocks: must not exceed max_blocks (2)",
        ),
        (
            "service_url: ftp://example\n",
            "ep/config.yaml:1: service_url: not an http(s) URL: 'ftp://example'",
        ),
        ("service_url: 8888\n", "ep/config.yaml:1: service_url: must be a URL, got 8888"),
        ("engine: {max_workers: 2}\n", "ep/config.yaml: service_url: is required"),
        (URL + "service_url: http://other/\n", "ep/config.yaml:2: service_url: is given twice"),
        ("- service_url\n", "ep/config.yaml:1: must be a mapping of keys to values, got a list"),
    ],
)
def test_each_problem_names_key_and_line(text, expected):
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once_in_line_order():
    found = problems(
        """\
        service_url: http://127.0.0.1:8888/fx/api/v2/
        engine:
          type: process
          max_workers: -2
        sandbox: docker
        colour: blue
        """
    )
    assert [p.split(":")[1] for p in found] == ["4", "5", "6"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("service_url: [unclosed\n", 2),
        ("a: b\n  c: d\n", 2),
        ("key: 'open\n", 2),
        ("ok: 1\n\tbad: 2\n", 2),
    ],
)
def test_bad_yaml_names_the_line(text, line):
    [problem] = problems(text)
    assert problem.startswith(f"ep/config.yaml:{line}: not valid YAML:")


def test_empty_file():
    [problem] = problems("# only a comment\n")
    assert "the file is empty" in problem


def test_parsl_engine_validates(tmp_path):
    config = parse_config(
        URL
        + textwrap.dedent("""\
        engine:
          type: parsl
          max_workers_per_node: 4
          provider: {type: slurm, partition: debug, walltime: "01:00:00"}
          min_blocks: 0
          max_blocks: 4
        """)
    )
    assert config.engine.type == "parsl"
    assert config.engine.provider == {"type": "slurm", "partition": "debug", "walltime": "01:00:00"}
    assert config.engine.max_workers == 16


def test_load_config_of_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file; run `fx-endpoint configure` first"):
        load_config(tmp_path / "config.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="binary.yaml"):
        load_config(tmp_path / "binary.yaml")


def test_error_message_lists_problems_under_a_title():
    with pytest.raises(ConfigError) as info:
        parse_config(URL + "foo: 1\n", "x/config.yaml")
    assert str(info.value) == (
        "invalid endpoint config:\n  x/config.yaml:2: foo: unknown key; valid keys: service_url, "
        "engine, heartbeat_period, heartbeat_threshold, max_retries_on_system_failure, max_result_size, "
        "worker_init, available_accelerators, sandbox"
    )
