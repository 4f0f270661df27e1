"""The parsl engine's YAML mapped to Parsl objects: the one module that knows Parsl's names.

``engine.provider`` in config.yaml names a Parsl execution provider by a short type (``local``,
``slurm``, ``pbspro``, ``condor``, ``kubernetes``) and carries that provider's options; its
``launcher`` names a Parsl launcher the same way (``launcher: srun``, or
``launcher: {type: srun, overrides: "--mpi=none"}``). Each option is checked when the file is
read, with config.py's validator, so every problem names its key and its line, and an unknown key
suggests the closest one. The Parsl classes are imported only when the engine starts: reading a
config file never pays for importing Parsl.

Blocks (``init_blocks``, ``min_blocks``, ``max_blocks``, ``nodes_per_block``), workers
(``max_workers_per_node``) and scaling (``strategy``, ``max_idletime``, ``strategy_period``) are
keys of the ``engine`` section, and ``worker_init`` is the top-level key every engine uses; they
are passed to the provider, the HighThroughputExecutor and Parsl's JobStatusPoller from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..config import (
    EndpointConfig,
    EngineConfig,
    _choices,
    _describe,
    _is_int,
    _is_positive_number,
    _is_str,
    _Validator,
)
from .base import EngineError

if TYPE_CHECKING:
    from parsl.executors import HighThroughputExecutor
    from parsl.jobs.job_status_poller import JobStatusPoller
    from parsl.launchers.base import Launcher
    from parsl.providers.base import ExecutionProvider

#: Parsl's scaling strategies (``none``: only init_blocks, never more, never fewer).
STRATEGIES = ("simple", "htex_auto_scale", "none")
#: The module run as the interchange and the one run on every node of a block, by ``python -m``:
#: no dependence on Parsl's console scripts being on the PATH of the block.
INTERCHANGE_MODULE = "parsl.executors.high_throughput.interchange"
WORKER_POOL_MODULE = "parsl.executors.high_throughput.process_worker_pool"

_WALLTIME = re.compile(r"^\d+:[0-5]\d:[0-5]\d$")

#: An option's check: returns the option's value, or None after reporting a problem.
Check = Callable[[_Validator, str, yaml.Node], Any]


def _text(v: _Validator, key: str, node: yaml.Node) -> Any:
    return v.typed(key, node, _is_str, "text")


def _name(v: _Validator, key: str, node: yaml.Node) -> Any:
    """A name that may look like a number (an account, a user id): text or an integer."""
    value = v.typed(
        key,
        node,
        lambda x: isinstance(x, (str, int)) and not isinstance(x, bool),
        "a name (text or an integer)",
    )
    return None if value is None else str(value)


def _count(v: _Validator, key: str, node: yaml.Node) -> Any:
    return v.typed(key, node, _is_int(1), "an integer >= 1")


def _number(v: _Validator, key: str, node: yaml.Node) -> Any:
    return v.typed(key, node, _is_positive_number, "a number > 0")


def _flag(v: _Validator, key: str, node: yaml.Node) -> Any:
    return v.typed(key, node, lambda x: isinstance(x, bool), "true or false")


def _walltime(v: _Validator, key: str, node: yaml.Node) -> Any:
    """HH:MM:SS, read from the node's text: unquoted, YAML would read 01:00:00 as 3600."""
    text = node.value if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(text, str) or not _WALLTIME.match(text):
        shown = repr(text) if isinstance(text, str) else _describe(node)
        v.problem(key, node, f'must be a time like "01:30:00" (hours:minutes:seconds), got {shown}')
        return None
    return text


def _text_map(v: _Validator, key: str, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.MappingNode):
        v.problem(key, node, f"must be a mapping of names to text, got {_describe(node)}")
        return None
    values = {
        name: _name(v, f"{key}.{name}", value)
        for name, (_, value) in v.mapping(node, key, ()).items()
    }
    return None if None in values.values() else values


def _text_list(v: _Validator, key: str, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.SequenceNode):
        v.problem(key, node, f"must be a list of text, got {_describe(node)}")
        return None
    items = [_text(v, key, item) for item in node.value]
    return None if None in items else items


def _volumes(v: _Validator, key: str, node: yaml.Node) -> Any:
    """Kubernetes persistent volumes: a list of [claim name, mount path] pairs."""
    expected = 'must be a list of [claim, mount path] pairs like [["data", "/data"]]'
    if not isinstance(node, yaml.SequenceNode):
        v.problem(key, node, f"{expected}, got {_describe(node)}")
        return None
    pairs = []
    for item in node.value:
        if not isinstance(item, yaml.SequenceNode) or len(item.value) != 2:
            v.problem(key, item, f"{expected}, got {_describe(item)}")
            return None
        pair = tuple(_text(v, key, part) for part in item.value)
        if None in pair:
            return None
        pairs.append(pair)
    return pairs


@dataclass(frozen=True)
class ProviderSpec:
    """A Parsl provider as config.yaml names it: its class, options, and the command it needs."""

    cls: str
    options: dict[str, Check]
    #: The batch system's submit command; the engine checks it is installed when it starts.
    command: str | None = None
    #: The Python package the provider needs beyond Parsl itself.
    package: str | None = None
    required: tuple[str, ...] = ()
    has_launcher: bool = True


@dataclass(frozen=True)
class LauncherSpec:
    """A Parsl launcher as config.yaml names it."""

    cls: str
    options: dict[str, Check] = field(default_factory=dict)
    required: tuple[str, ...] = ()


_BATCH = {"walltime": _walltime, "scheduler_options": _text, "cmd_timeout": _count}

PROVIDERS: dict[str, ProviderSpec] = {
    "local": ProviderSpec("parsl.providers.LocalProvider", {"cmd_timeout": _count}),
    "slurm": ProviderSpec(
        "parsl.providers.SlurmProvider",
        {
            "partition": _name,
            "account": _name,
            "qos": _name,
            "constraint": _text,
            "clusters": _text,
            "cores_per_node": _count,
            "mem_per_node": _count,
            "gpus_per_node": _count,
            "gres": _text,
            "exclusive": _flag,
            **_BATCH,
        },
        command="sbatch",
    ),
    "pbspro": ProviderSpec(
        "parsl.providers.PBSProProvider",
        {
            "account": _name,
            "queue": _name,
            "select_options": _text,
            "cpus_per_node": _count,
            **_BATCH,
        },
        command="qsub",
    ),
    "condor": ProviderSpec(
        "parsl.providers.CondorProvider",
        {
            "project": _name,
            "requirements": _text,
            "cores_per_slot": _count,
            "mem_per_slot": _number,
            "environment": _text_map,
            "transfer_input_files": _text_list,
            **_BATCH,
        },
        command="condor_submit",
    ),
    "kubernetes": ProviderSpec(
        "parsl.providers.KubernetesProvider",
        {
            "image": _text,
            "namespace": _name,
            "max_cpu": _number,
            "max_mem": _text,
            "init_cpu": _number,
            "init_mem": _text,
            "extra_requests": _text_map,
            "extra_limits": _text_map,
            "pod_name": _text,
            "user_id": _name,
            "group_id": _name,
            "run_as_non_root": _flag,
            "secret": _text,
            "persistent_volumes": _volumes,
            "service_account_name": _text,
            "annotations": _text_map,
        },
        package="kubernetes",
        required=("image",),
        has_launcher=False,
    ),
}

LAUNCHERS: dict[str, LauncherSpec] = {
    "single_node": LauncherSpec("parsl.launchers.SingleNodeLauncher", {"fail_on_any": _flag}),
    "simple": LauncherSpec("parsl.launchers.SimpleLauncher"),
    "srun": LauncherSpec("parsl.launchers.SrunLauncher", {"overrides": _text}),
    "srun_mpi": LauncherSpec("parsl.launchers.SrunMPILauncher", {"overrides": _text}),
    "aprun": LauncherSpec("parsl.launchers.AprunLauncher", {"overrides": _text}),
    "jsrun": LauncherSpec("parsl.launchers.JsrunLauncher", {"overrides": _text}),
    "mpiexec": LauncherSpec(
        "parsl.launchers.MpiExecLauncher", {"overrides": _text, "bind_cmd": _text}
    ),
    "mpirun": LauncherSpec("parsl.launchers.MpiRunLauncher", {"overrides": _text}),
    "gnu_parallel": LauncherSpec("parsl.launchers.GnuParallelLauncher"),
    "wrapped": LauncherSpec(
        "parsl.launchers.WrappedLauncher", {"prepend": _text}, required=("prepend",)
    ),
}

#: Keys people put under provider (as Parsl's Python API has them) that live elsewhere here.
_ELSEWHERE = {
    "init_blocks": "engine.init_blocks",
    "min_blocks": "engine.min_blocks",
    "max_blocks": "engine.max_blocks",
    "nodes_per_block": "engine.nodes_per_block",
    "max_workers_per_node": "engine.max_workers_per_node",
    "worker_init": "worker_init (at the top level of config.yaml)",
}


# --- validation (called by config.py) ------------------------------------------------------


def validate_provider(v: _Validator, node: yaml.Node) -> dict[str, Any] | None:
    """The checked ``engine.provider`` section: ``{type, option: value, launcher: {type, ...}}``.

    ``provider: slurm`` is short for ``provider: {type: slurm}``. Returns None after reporting
    a problem.
    """
    key = "engine.provider"
    section = _typed_section(v, node, key, PROVIDERS)
    if section is None:
        return None
    provider_type, type_node = section
    spec = PROVIDERS[provider_type]
    if isinstance(node, yaml.ScalarNode):
        return {"type": provider_type}
    known = ("type", *(["launcher"] if spec.has_launcher else []), *spec.options, *_ELSEWHERE)
    entries = v.mapping(node, key, known)
    values: dict[str, Any] = {"type": provider_type}
    ok = True
    for name, (key_node, value_node) in entries.items():
        if name == "type":
            continue
        if name in _ELSEWHERE:
            v.problem(
                f"{key}.{name}", key_node, f"is not a provider option: set {_ELSEWHERE[name]}"
            )
            ok = False
        elif name == "launcher":
            launcher = _launcher(v, value_node)
            ok = ok and launcher is not None
            values["launcher"] = launcher
        else:
            value = spec.options[name](v, f"{key}.{name}", value_node)
            ok = ok and value is not None
            values[name] = value
    for name in spec.required:
        if name not in entries:
            v.problem(f"{key}.{name}", type_node, f"is required by the {provider_type} provider")
            ok = False
    return values if ok else None


def _launcher(v: _Validator, node: yaml.Node) -> dict[str, Any] | None:
    key = "engine.provider.launcher"
    section = _typed_section(v, node, key, LAUNCHERS)
    if section is None:
        return None
    launcher_type, type_node = section
    if isinstance(node, yaml.ScalarNode):
        return {"type": launcher_type}
    spec = LAUNCHERS[launcher_type]
    entries = v.mapping(node, key, ("type", *spec.options))
    values: dict[str, Any] = {"type": launcher_type}
    for name, (_, value_node) in entries.items():
        if name != "type":
            values[name] = spec.options[name](v, f"{key}.{name}", value_node)
    for name in spec.required:
        if name not in entries:
            v.problem(f"{key}.{name}", type_node, f"is required by the {launcher_type} launcher")
            return None
    return None if None in values.values() else values


def _typed_section(
    v: _Validator, node: yaml.Node, key: str, kinds: dict[str, Any]
) -> tuple[str, yaml.Node] | None:
    """The ``type`` of a section given as a mapping with a ``type`` key, or as the type alone."""
    names = tuple(kinds)
    type_node = node
    if isinstance(node, yaml.MappingNode):
        found = [n for k, n in node.value if isinstance(k, yaml.ScalarNode) and k.value == "type"]
        if not found:
            v.problem(f"{key}.type", node, f"is required: one of {', '.join(names)}")
            return None
        type_node = found[0]
    elif not isinstance(node, yaml.ScalarNode):
        v.problem(key, node, f"must be a type name or a mapping with a type, got {_describe(node)}")
        return None
    given = type_node.value if isinstance(type_node, yaml.ScalarNode) else None
    name = v.typed(
        f"{key}.type" if type_node is not node else key,
        type_node,
        lambda x: isinstance(x, str) and x in kinds,
        _choices(names, given),
    )
    return None if name is None else (name, type_node)


# --- building Parsl objects (called by the engine) -----------------------------------------


def _load(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_launcher(launcher: dict[str, Any]) -> Launcher:
    """A Parsl launcher from a checked ``launcher`` section."""
    options = {k: value for k, value in launcher.items() if k != "type"}
    return _load(LAUNCHERS[launcher["type"]].cls)(**options)


def check_host(engine: EngineConfig) -> None:
    """Raise :class:`EngineError` when the provider cannot work on this host: its batch
    system's submit command or its Python package is missing."""
    provider_type = (engine.provider or {"type": "local"})["type"]
    spec = PROVIDERS[provider_type]
    if spec.command is not None and shutil.which(spec.command) is None:
        raise EngineError(
            f"the {provider_type} provider submits blocks with `{spec.command}`, which is not "
            "on the PATH of this host; start the endpoint where it is (a login node)"
        )
    if spec.package is not None and importlib.util.find_spec(spec.package) is None:
        raise EngineError(
            f"the {provider_type} provider needs the Python package {spec.package!r}; "
            f"install it (pip install {spec.package}) in the endpoint's environment"
        )


def build_provider(config: EndpointConfig) -> ExecutionProvider:
    """The Parsl provider of a checked config (``local`` when it names none), or
    :class:`EngineError` when Parsl refuses its options."""
    engine = config.engine
    provider = engine.provider or {"type": "local"}
    spec = PROVIDERS[provider["type"]]
    options = {k: value for k, value in provider.items() if k not in ("type", "launcher")}
    if "launcher" in provider:
        options["launcher"] = build_launcher(provider["launcher"])
    try:
        return _load(spec.cls)(
            **options,
            nodes_per_block=engine.nodes_per_block,
            init_blocks=engine.init_blocks,
            min_blocks=engine.min_blocks,
            max_blocks=engine.max_blocks,
            worker_init=block_init(config.worker_init),
        )
    except Exception as e:
        raise EngineError(f"Parsl cannot set up the {provider['type']} provider: {e}") from e


def block_init(worker_init: str) -> str:
    """The shell lines a block runs before its workers: this endpoint's Python first on PATH,
    then ``worker_init`` (which may activate another environment, whose python3 then runs the
    workers, as with the process engine)."""
    here = shlex.quote(str(Path(sys.executable).parent))
    return f'export PATH={here}:"$PATH"\n{worker_init}'.rstrip("\n") + "\n"


def worker_pool_command() -> str:
    """Parsl's command for the worker pool of a node, run by ``python3 -m`` (see above)."""
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    script, _, arguments = DEFAULT_LAUNCH_CMD.partition(" ")
    if script != "process_worker_pool.py":
        raise EngineError(
            f"this version of Parsl starts its worker pools with {script!r}, which the parsl "
            "engine does not know; install a Parsl release that fx supports"
        )
    return f"python3 -m {WORKER_POOL_MODULE} {arguments}"


def build_executor(config: EndpointConfig, run_dir: Path, label: str) -> HighThroughputExecutor:
    """The HighThroughputExecutor of a checked config, its files under ``run_dir``.

    Its heartbeats follow the endpoint's: a worker that dies is noticed within
    ``heartbeat_period``, a node that stops answering within ``heartbeat_threshold``.
    """
    from parsl.executors import HighThroughputExecutor

    engine = config.engine
    check_host(engine)
    provider = build_provider(config)
    provider.script_dir = str(run_dir / "submit_scripts")
    (run_dir / "submit_scripts").mkdir(parents=True, mode=0o700, exist_ok=True)
    # Local blocks reach the interchange on loopback; remote ones by probing every address
    # of this host, unless the config names the one they can reach.
    local = engine.provider is None or engine.provider["type"] == "local"
    address = engine.address or ("127.0.0.1" if local else None)
    try:
        executor = HighThroughputExecutor(
            label=label,
            provider=provider,
            address=address,
            launch_cmd=worker_pool_command(),
            interchange_launch_cmd=[sys.executable, "-m", INTERCHANGE_MODULE],
            max_workers_per_node=engine.max_workers_per_node,
            available_accelerators=list(config.available_accelerators),
            heartbeat_period=max(1, round(config.heartbeat_period)),
            heartbeat_threshold=max(2, round(config.heartbeat_threshold)),
        )
    except Exception as e:
        raise EngineError(f"Parsl refuses the engine's settings: {e}") from e
    executor.run_dir = str(run_dir)
    return executor


def start_scaling(engine: EngineConfig, executor: HighThroughputExecutor) -> JobStatusPoller:
    """Parsl's JobStatusPoller for a started executor: it requests blocks when tasks wait and
    releases them after ``max_idletime`` without tasks, between min_blocks and max_blocks."""
    from parsl.jobs.job_status_poller import JobStatusPoller

    poller = JobStatusPoller(
        strategy=engine.strategy,
        max_idletime=engine.max_idletime,
        strategy_period=engine.strategy_period,
    )
    poller.add_executors([executor])
    return poller
