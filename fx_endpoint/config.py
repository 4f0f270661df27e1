"""The endpoint's ``config.yaml``: its schema, its validation, and the commented template.

Validation walks the YAML *node* tree (``yaml.compose``) rather than the loaded data so that
every error names the key, the bad value and the line it is on. All problems of a file are
reported at once; an unknown key is an error that suggests the closest valid one, because a typo
silently ignored is a setting the user believes in but does not get.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ENGINE_TYPES = ("process", "parsl")
SANDBOXES = ("none", "bwrap")
#: Keys of ``engine`` that only the Parsl engine reads.
PARSL_ONLY_KEYS = (
    "provider",
    "init_blocks",
    "min_blocks",
    "max_blocks",
    "nodes_per_block",
    "max_workers_per_node",
    "max_idletime",
    "strategy",
    "strategy_period",
    "address",
)


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file: the key (dotted), its 1-based line, what is wrong."""

    key: str
    line: int | None
    message: str

    def format(self, path: Path) -> str:
        """``path:line: key: message``, the way compilers point at a line."""
        where = f"{path}:{self.line}" if self.line is not None else str(path)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config file that is not valid; ``str()`` lists every problem with its line."""

    def __init__(self, path: Path | str, problems: list[ConfigProblem]) -> None:
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  {p.format(self.path)}" for p in problems)
        super().__init__(f"invalid endpoint config:\n{lines}")


@dataclass(frozen=True)
class EngineConfig:
    """The ``engine:`` section."""

    type: str = "process"
    #: Tasks running at once at most: the worker processes (process engine), or
    #: max_blocks x nodes_per_block x max_workers_per_node (parsl engine).
    max_workers: int = 1
    #: Tasks the endpoint accepts beyond its workers, so that they never wait for the network.
    prefetch_capacity: int = 32
    #: The parsl engine's provider section, checked by ``engines.parsl_config``; None: local.
    provider: dict[str, Any] | None = None
    init_blocks: int = 0
    min_blocks: int = 0
    max_blocks: int = 1
    nodes_per_block: int = 1
    max_workers_per_node: int = 1
    #: Seconds without tasks after which Parsl releases the blocks above min_blocks.
    max_idletime: float = 120.0
    strategy: str = "simple"
    strategy_period: float = 5.0
    #: The address of this host that the blocks' workers connect to (None: they probe all).
    address: str | None = None


@dataclass(frozen=True)
class EndpointConfig:
    """A validated ``config.yaml``."""

    service_url: str
    engine: EngineConfig = field(default_factory=EngineConfig)
    heartbeat_period: float = 5.0
    heartbeat_threshold: float = 30.0
    max_retries_on_system_failure: int = 1
    #: Largest result payload (bytes) sent back; a larger one fails its task. 512 MiB keeps
    #: results below SQLite's 1 GB blob limit in the journal and the service's store.
    max_result_size: int = 512 * 1024 * 1024
    worker_init: str = ""
    available_accelerators: tuple[str, ...] = ()
    sandbox: str = "none"

    @property
    def capacity(self) -> int:
        """How many tasks the endpoint holds at most: running plus prefetched."""
        return self.engine.max_workers + self.engine.prefetch_capacity


def normalize_service_url(url: str) -> str:
    """``url`` with a trailing slash, or ValueError if it is not an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    url = url.strip()
    return url if url.endswith("/") else url + "/"


# --- validation -----------------------------------------------------------------------------


class _Validator:
    """Collects problems while converting nodes to values."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(ConfigProblem(key, line, message))

    def mapping(
        self, node: yaml.Node, key: str, known: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The entries of a mapping node by key, reporting unknown and duplicate keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(key, node, f"must be a mapping of keys to values, got {_describe(node)}")
            return {}
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            full = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str):
                self.problem(key, key_node, "keys must be plain names")
            elif name in entries:
                self.problem(full, key_node, "is given twice")
            elif known and name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else f"; valid keys: {', '.join(known)}"
                )
                self.problem(full, key_node, f"unknown key{hint}")
            else:
                entries[name] = (key_node, value_node)
        return entries

    def scalar(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def typed(
        self,
        key: str,
        node: yaml.Node,
        check: Callable[[Any], bool],
        expected: str,
    ) -> Any:
        """The value of a scalar node if ``check`` accepts it, else a problem and None."""
        value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else _UNSET
        if value is _UNSET or not check(value):
            shown = _describe(node) if value is _UNSET else repr(value)
            self.problem(key, node, f"must be {expected}, got {shown}")
            return None
        return value


_UNSET = object()


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _is_int(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def _choices(choices: tuple[str, ...], given: Any = None) -> str:
    """``one of a, b`` plus the closest choice to what was given, when there is one."""
    text = f"one of {', '.join(choices)}"
    if isinstance(given, str):
        close = difflib.get_close_matches(given, choices, n=1)
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text


def _given(entries: dict[str, tuple[yaml.Node, yaml.Node]], key: str) -> Any:
    node = entries[key][1] if key in entries else None
    return node.value if isinstance(node, yaml.ScalarNode) else None


TOP_KEYS = (
    "service_url",
    "engine",
    "heartbeat_period",
    "heartbeat_threshold",
    "max_retries_on_system_failure",
    "max_result_size",
    "worker_init",
    "available_accelerators",
    "sandbox",
)
ENGINE_KEYS = ("type", "max_workers", "prefetch_capacity", *PARSL_ONLY_KEYS)


def parse_config(text: str, path: Path | str = "config.yaml") -> EndpointConfig:
    """Validate the text of a config file; raise :class:`ConfigError` listing every problem."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e)
        raise ConfigError(path, [ConfigProblem("", line, f"not valid YAML: {reason}")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise ConfigError(
            path,
            [
                ConfigProblem(
                    "",
                    None,
                    "the file is empty; it needs at least "
                    "service_url (run `fx-endpoint configure`)",
                )
            ],
        )
    v = _Validator(loader)
    top = v.mapping(root, "", TOP_KEYS)
    values: dict[str, Any] = {}

    def get(key: str, check: Callable[[Any], bool], expected: str) -> None:
        if key in top:
            value = v.typed(key, top[key][1], check, expected)
            if value is not None:
                values[key] = value

    if "service_url" not in top:
        if isinstance(root, yaml.MappingNode):
            v.problem(
                "service_url",
                None,
                "is required (the URL of the fx service, e.g. http://127.0.0.1:8888/fx/api/v2/)",
            )
    else:
        node = top["service_url"][1]
        url = v.typed("service_url", node, _is_str, "a URL")
        if url is not None:
            try:
                values["service_url"] = normalize_service_url(url)
            except ValueError as e:
                v.problem("service_url", node, str(e))

    get("heartbeat_period", _is_positive_number, "a number of seconds > 0")
    get("heartbeat_threshold", _is_positive_number, "a number of seconds > 0")
    get("max_retries_on_system_failure", _is_int(0), "an integer >= 0")
    get("max_result_size", _is_int(1), "a number of bytes >= 1")
    get("worker_init", lambda s: isinstance(s, str) or s is None, "text (shell lines)")
    if values.get("worker_init") is None:
        values.pop("worker_init", None)
    get("sandbox", _one_of(SANDBOXES), _choices(SANDBOXES, _given(top, "sandbox")))

    period = values.get("heartbeat_period", EndpointConfig.heartbeat_period)
    threshold = values.get("heartbeat_threshold", EndpointConfig.heartbeat_threshold)
    if threshold <= period:
        if "heartbeat_threshold" in top:
            v.problem(
                "heartbeat_threshold",
                top["heartbeat_threshold"][1],
                f"must be greater than heartbeat_period ({period}), got {threshold}",
            )
        else:
            v.problem(
                "heartbeat_period",
                top["heartbeat_period"][1],
                f"must be less than heartbeat_threshold ({threshold}), got {period}",
            )

    accelerators: tuple[str, ...] = ()
    if "available_accelerators" in top:
        accelerators = _accelerators(v, top["available_accelerators"][1])
    values["available_accelerators"] = accelerators

    engine_node = top["engine"][1] if "engine" in top else None
    values["engine"] = _engine(v, engine_node, accelerators)
    if values["engine"].type == "parsl" and values.get("sandbox", "none") != "none":
        v.problem(
            "sandbox",
            top["sandbox"][1],
            "applies only to engine type process (parsl workers run as their block starts them)",
        )

    if v.problems:
        raise ConfigError(path, sorted(v.problems, key=lambda p: p.line or 0))
    return EndpointConfig(**values)


def _accelerators(v: _Validator, node: yaml.Node) -> tuple[str, ...]:
    key = "available_accelerators"
    if isinstance(node, yaml.ScalarNode) and v.scalar(node) is None:
        return ()
    if not isinstance(node, yaml.SequenceNode):
        v.problem(
            key, node, f'must be a list of accelerator ids like ["0", "1"], got {_describe(node)}'
        )
        return ()
    ids: list[str] = []
    for item in node.value:
        value = v.typed(
            key,
            item,
            lambda x: (
                isinstance(x, (str, int)) and not isinstance(x, bool) and str(x).strip() != ""
            ),
            "an accelerator id (text or integer)",
        )
        if value is None:
            continue
        text = str(value).strip()
        if text in ids:
            v.problem(key, item, f"lists {text!r} twice")
        ids.append(text)
    return tuple(ids)


def _engine(v: _Validator, node: yaml.Node | None, accelerators: tuple[str, ...]) -> EngineConfig:
    default_workers = len(accelerators) or os.cpu_count() or 1
    if node is None:
        return EngineConfig(
            max_workers=default_workers, prefetch_capacity=_default_prefetch(default_workers)
        )
    entries = v.mapping(node, "engine", ENGINE_KEYS)
    values: dict[str, Any] = {}

    def get(key: str, check: Callable[[Any], bool], expected: str) -> None:
        if key in entries:
            value = v.typed(f"engine.{key}", entries[key][1], check, expected)
            if value is not None:
                values[key] = value

    get("type", _one_of(ENGINE_TYPES), _choices(ENGINE_TYPES, _given(entries, "type")))
    get("max_workers", _is_int(1), "an integer >= 1")
    get("prefetch_capacity", _is_int(0), "an integer >= 0")
    get("init_blocks", _is_int(0), "an integer >= 0")
    get("min_blocks", _is_int(0), "an integer >= 0")
    get("max_blocks", _is_int(1), "an integer >= 1")
    get("nodes_per_block", _is_int(1), "an integer >= 1")
    get("max_workers_per_node", _is_int(1), "an integer >= 1")
    get("max_idletime", _is_positive_number, "a number of seconds > 0")
    get("strategy_period", _is_positive_number, "a number of seconds > 0")
    get("address", _is_str, "a host name or IP address")
    engine_type = values.get("type", "process" if "type" not in entries else None)
    if engine_type == "parsl":
        from .engines import parsl_config  # not at the top: that package imports this one

        strategies = parsl_config.STRATEGIES
        get("strategy", _one_of(strategies), _choices(strategies, _given(entries, "strategy")))
        if "provider" in entries:
            values["provider"] = parsl_config.validate_provider(v, entries["provider"][1])
        if "max_workers" in entries:
            v.problem(
                "engine.max_workers",
                entries["max_workers"][0],
                "applies only to engine type process; for parsl set max_workers_per_node "
                "(workers on each node)",
            )
    elif engine_type == "process":
        for key in PARSL_ONLY_KEYS:
            if key in entries:
                v.problem(
                    f"engine.{key}",
                    entries[key][0],
                    f"applies only to engine type parsl (this engine is {engine_type})",
                )
    max_blocks = values.get("max_blocks", EngineConfig.max_blocks)
    for key in ("min_blocks", "init_blocks"):
        if values.get(key, 0) > max_blocks:
            v.problem(
                f"engine.{key}", entries[key][1], f"must not exceed max_blocks ({max_blocks})"
            )
    if engine_type == "parsl":
        per_node = values.setdefault("max_workers_per_node", default_workers)
        nodes = values.get("nodes_per_block", EngineConfig.nodes_per_block)
        values["max_workers"] = max_blocks * nodes * per_node
    values.setdefault("max_workers", default_workers)
    values.setdefault("prefetch_capacity", _default_prefetch(values["max_workers"]))
    return EngineConfig(**values)


def _default_prefetch(max_workers: int) -> int:
    """Enough queued tasks to cover a few milliseconds of network latency at full speed."""
    return max(32, max_workers)


def load_config(path: Path) -> EndpointConfig:
    """Read and validate ``path``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            path, [ConfigProblem("", None, "no such file; run `fx-endpoint configure` first")]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, [ConfigProblem("", None, f"cannot read it: {e}")]) from None
    return parse_config(text, path)


# --- the template that `fx-endpoint configure` writes -----------------------------------------

TEMPLATE = """\
# fx endpoint configuration ({name}).
# Edit, then `fx-endpoint restart {name}`. Reference: docs/endpoint.md.
# Unknown keys are errors, so a typo never goes unnoticed.

# The fx service this endpoint serves (the Jupyter server's URL + fx/api/v2/).
service_url: {service_url}

engine:
  # process: a pool of worker processes on this machine.
  # parsl: Parsl's HighThroughputExecutor on blocks of nodes from a batch system (provider:
  #        local, slurm, pbspro, condor, kubernetes), requested as tasks wait, e.g.
  #   type: parsl
  #   provider: {{type: slurm, partition: debug, walltime: "01:00:00", launcher: srun}}
  #   max_blocks: 4
  #   max_workers_per_node: 32   # instead of max_workers
  #   max_idletime: 120          # seconds before idle blocks are released
  type: process
  # Worker processes, i.e. tasks running at once. Default: the number of CPUs (or of
  # available_accelerators when those are listed).
  max_workers: {max_workers}
  # Tasks accepted beyond the running ones so that workers never wait for the network.
  # prefetch_capacity: 32

# Seconds between heartbeats to the service, and the silence after which either side
# considers the other gone (the endpoint keeps its results and reconnects).
heartbeat_period: 5
heartbeat_threshold: 30

# How many times a task is retried when its worker dies under it (killed, out of memory...).
# A task that raises an exception is never retried.
max_retries_on_system_failure: 1

# Shell lines run before each worker starts, e.g. to load modules or activate an environment:
# worker_init: |
#   module load cuda
#   source ~/venvs/science/bin/activate
worker_init: ""

# One accelerator per worker, round robin, through CUDA_VISIBLE_DEVICES (and friends).
# available_accelerators: ["0", "1"]
available_accelerators: []

# none, or bwrap: run workers under bubblewrap (read-only root, private /tmp, no network).
sandbox: none
"""


def render_template(name: str, service_url: str, max_workers: int | None = None) -> str:
    """The commented config file ``fx-endpoint configure`` writes."""
    return TEMPLATE.format(
        name=name, service_url=service_url, max_workers=max_workers or os.cpu_count() or 1
    )
