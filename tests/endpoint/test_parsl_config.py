"""The parsl engine's config.yaml: every provider and launcher becomes the right Parsl object,
and every bad key or value is an error naming its key and line."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from parsl.executors import HighThroughputExecutor
from parsl.launchers import (
    AprunLauncher,
    GnuParallelLauncher,
    JsrunLauncher,
    MpiExecLauncher,
    MpiRunLauncher,
    SimpleLauncher,
    SingleNodeLauncher,
    SrunLauncher,
    SrunMPILauncher,
    WrappedLauncher,
)
from parsl.providers import CondorProvider, LocalProvider, PBSProProvider, SlurmProvider

from fx_endpoint.config import ConfigError, parse_config
from fx_endpoint.engines import EngineError, parsl_config

URL = "service_url: http://127.0.0.1:8888/fx/api/v2/\n"


def parsl(engine: str, top: str = "") -> str:
    """A config with ``type: parsl`` and the given engine lines (YAML, dedented)."""
    body = textwrap.indent(textwrap.dedent(engine), "  ")
    return URL + textwrap.dedent(top) + "engine:\n  type: parsl\n" + body


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ep/config.yaml")
    return [p.format(Path("ep/config.yaml")) for p in info.value.problems]


def test_defaults_local_provider_and_workers_from_this_host():
    config = parse_config(parsl(""))
    engine = config.engine
    assert engine.provider is None
    assert engine.max_workers_per_node == os.cpu_count()
    assert (engine.init_blocks, engine.min_blocks, engine.max_blocks) == (0, 0, 1)
    assert (engine.strategy, engine.max_idletime, engine.strategy_period) == ("simple", 120, 5)
    assert engine.max_workers == os.cpu_count()
    provider = parsl_config.build_provider(config)
    assert isinstance(provider, LocalProvider)
    assert isinstance(provider.launcher, SingleNodeLauncher)


def test_max_workers_counts_every_worker_of_every_block():
    config = parse_config(
        parsl(
            """\
            max_workers_per_node: 8
            nodes_per_block: 2
            max_blocks: 3
            """
        )
    )
    assert config.engine.max_workers == 48
    assert config.capacity == 48 + 48  # prefetch defaults to max(32, max_workers)


def test_accelerators_set_the_default_workers_per_node():
    config = parse_config(parsl("", top='available_accelerators: ["0", "1", "2"]\n'))
    assert config.engine.max_workers_per_node == 3


def test_slurm_provider_with_every_option():
    config = parse_config(
        parsl(
            """\
            provider:
              type: slurm
              partition: debug
              account: 1234
              qos: high
              constraint: haswell
              clusters: c1
              cores_per_node: 16
              mem_per_node: 64
              gpus_per_node: 2
              gres: "gpu:2"
              exclusive: false
              walltime: 01:30:00
              scheduler_options: "#SBATCH --mail-type=none"
              cmd_timeout: 20
              launcher: {type: srun, overrides: "--cpu-bind=none"}
            init_blocks: 1
            min_blocks: 1
            max_blocks: 4
            nodes_per_block: 2
            """,
            top="worker_init: module load python\n",
        )
    )
    provider = parsl_config.build_provider(config)
    assert isinstance(provider, SlurmProvider)
    assert provider.partition == "debug"
    assert provider.account == "1234"  # a numeric account is a name
    assert provider.qos == "high"
    assert provider.walltime == "01:30:00"  # unquoted, YAML alone would read 5400
    assert provider.exclusive is False
    assert provider.cores_per_node == 16 and provider.mem_per_node == 64
    assert (provider.init_blocks, provider.min_blocks, provider.max_blocks) == (1, 1, 4)
    assert provider.nodes_per_block == 2
    assert "#SBATCH --mail-type=none" in provider.scheduler_options
    assert isinstance(provider.launcher, SrunLauncher)
    assert provider.launcher.overrides == "--cpu-bind=none"
    bin_dir = str(Path(sys.executable).parent)
    assert provider.worker_init.startswith(f'export PATH={bin_dir}:"$PATH"\nmodule load python\n')


def test_pbspro_and_condor_providers():
    pbs = parsl_config.build_provider(
        parse_config(
            parsl(
                """\
                provider:
                  type: pbspro
                  account: proj
                  queue: debug
                  select_options: "ngpus=1"
                  cpus_per_node: 32
                  walltime: "00:20:00"
                  launcher: mpiexec
                """
            )
        )
    )
    assert isinstance(pbs, PBSProProvider)
    assert (pbs.account, pbs.queue, pbs.cpus_per_node) == ("proj", "debug", 32)
    assert isinstance(pbs.launcher, MpiExecLauncher)
    condor = parsl_config.build_provider(
        parse_config(
            parsl(
                """\
                provider:
                  type: condor
                  project: p
                  requirements: "OpSys == \\"LINUX\\""
                  cores_per_slot: 4
                  mem_per_slot: 2.5
                  environment: {OMP_NUM_THREADS: 4}
                  transfer_input_files: [a.txt, b.txt]
                """
            )
        )
    )
    assert isinstance(condor, CondorProvider)
    assert list(condor.environment) == ["OMP_NUM_THREADS"]  # Parsl quotes the values
    assert condor.transfer_input_files == ["a.txt", "b.txt"]
    assert (condor.cores_per_slot, condor.mem_per_slot) == (4, 2.5)


def test_kubernetes_provider_options_are_checked():
    config = parse_config(
        parsl(
            """\
            provider:
              type: kubernetes
              image: ghcr.io/me/fx:latest
              namespace: science
              max_cpu: 2
              init_mem: 250Mi
              user_id: 1000
              run_as_non_root: true
              persistent_volumes: [[data, /data]]
              annotations: {team: physics}
            """
        )
    )
    assert config.engine.provider == {
        "type": "kubernetes",
        "image": "ghcr.io/me/fx:latest",
        "namespace": "science",
        "max_cpu": 2,
        "init_mem": "250Mi",
        "user_id": "1000",
        "run_as_non_root": True,
        "persistent_volumes": [("data", "/data")],
        "annotations": {"team": "physics"},
    }


def test_kubernetes_without_its_package_says_what_to_install(monkeypatch):
    # A None entry in sys.modules makes the package unimportable, whether installed or not.
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    config = parse_config(parsl("provider: {type: kubernetes, image: x}\n"))
    with pytest.raises(EngineError, match=r"needs the Python package 'kubernetes'.*pip install"):
        parsl_config.check_host(config.engine)


def test_a_batch_provider_without_its_command_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    config = parse_config(parsl("provider: {type: pbspro}\n"))
    with pytest.raises(EngineError, match="submits blocks with `qsub`, which is not on the PATH"):
        parsl_config.check_host(config.engine)


@pytest.mark.parametrize(
    ("launcher", "cls", "attributes"),
    [
        ("single_node", SingleNodeLauncher, {}),
        ("{type: single_node, fail_on_any: true}", SingleNodeLauncher, {"fail_on_any": True}),
        ("simple", SimpleLauncher, {}),
        ("srun", SrunLauncher, {}),
        ("{type: srun_mpi, overrides: -n 4}", SrunMPILauncher, {"overrides": "-n 4"}),
        ("{type: aprun, overrides: -cc none}", AprunLauncher, {"overrides": "-cc none"}),
        ("jsrun", JsrunLauncher, {}),
        ("{type: mpiexec, bind_cmd: --cpu-bind}", MpiExecLauncher, {"bind_cmd": "--cpu-bind"}),
        ("mpirun", MpiRunLauncher, {}),
        ("gnu_parallel", GnuParallelLauncher, {}),
        ("{type: wrapped, prepend: time}", WrappedLauncher, {"prepend": "time"}),
    ],
)
def test_each_launcher(launcher, cls, attributes):
    config = parse_config(parsl(f"provider: {{type: local, launcher: {launcher}}}\n"))
    built = parsl_config.build_provider(config).launcher
    assert type(built) is cls
    for name, value in attributes.items():
        assert getattr(built, name) == value


def test_provider_given_by_its_type_alone():
    config = parse_config(parsl("provider: slurm\n"))
    assert config.engine.provider == {"type": "slurm"}


def test_the_executor_runs_parsl_by_module_from_this_python(tmp_path):
    config = parse_config(
        parsl(
            """\
            max_workers_per_node: 3
            address: 10.0.0.5
            """,
            top='heartbeat_period: 2\nheartbeat_threshold: 9.6\navailable_accelerators: ["0", "1", "2"]\n',
        )
    )
    executor = parsl_config.build_executor(config, tmp_path / "parsl", "fx-test")
    assert isinstance(executor, HighThroughputExecutor)
    assert executor.label == "fx-test"
    assert executor.run_dir == str(tmp_path / "parsl")
    assert executor.provider.script_dir == str(tmp_path / "parsl" / "submit_scripts")
    assert (tmp_path / "parsl" / "submit_scripts").is_dir()
    assert executor.address == "10.0.0.5"
    assert executor.max_workers_per_node == 3
    assert executor.available_accelerators == ["0", "1", "2"]
    assert (executor.heartbeat_period, executor.heartbeat_threshold) == (2, 10)
    assert executor.launch_cmd.startswith(f"python3 -m {parsl_config.WORKER_POOL_MODULE} ")
    assert "{block_id}" in executor.launch_cmd
    assert executor.interchange_launch_cmd == [
        sys.executable,
        "-m",
        parsl_config.INTERCHANGE_MODULE,
    ]


def test_local_blocks_use_loopback_and_remote_ones_probe(tmp_path):
    local = parsl_config.build_executor(parse_config(parsl("")), tmp_path, "a")
    assert local.address == "127.0.0.1"
    remote = parsl_config.build_executor(parse_config(parsl("provider: slurm\n")), tmp_path, "b")
    assert remote.address is None


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        (
            "provider: {type: slurmm}\n",
            (
                "ep/config.yaml:4: engine.provider.type: must be one of local, slurm, pbspro, "
                "condor, kubernetes (did you mean 'slurm'?), got 'slurmm'"
            ),
        ),
        ("provider: pbs\n", "ep/config.yaml:4: engine.provider: must be one of local, slurm"),
        (
            "provider: {partition: x}\n",
            "ep/config.yaml:4: engine.provider.type: is required: one of",
        ),
        (
            "provider: [slurm]\n",
            "ep/config.yaml:4: engine.provider: must be a type name or a mapping",
        ),
        (
            "provider: {type: slurm, partiton: debug}\n",
            "ep/config.yaml:4: engine.provider.partiton: unknown key; did you mean 'partition'?",
        ),
        (
            "provider: {type: local, init_blocks: 2}\n",
            (
                "ep/config.yaml:4: engine.provider.init_blocks: is not a provider option: set "
                "engine.init_blocks"
            ),
        ),
        (
            "provider: {type: slurm, worker_init: x}\n",
            (
                "ep/config.yaml:4: engine.provider.worker_init: is not a provider option: set "
                "worker_init (at the top level of config.yaml)"
            ),
        ),
        (
            "provider: {type: slurm, walltime: 1h}\n",
            (
                'ep/config.yaml:4: engine.provider.walltime: must be a time like "01:30:00" '
                "(hours:minutes:seconds), got '1h'"
            ),
        ),
        (
            "provider: {type: slurm, walltime: 90}\n",
            "ep/config.yaml:4: engine.provider.walltime: must be a time like",
        ),
        (
            "provider: {type: slurm, cores_per_node: 0}\n",
            "ep/config.yaml:4: engine.provider.cores_per_node: must be an integer >= 1, got 0",
        ),
        (
            "provider: {type: slurm, exclusive: maybe}\n",
            "ep/config.yaml:4: engine.provider.exclusive: must be true or false, got 'maybe'",
        ),
        (
            "provider: {type: slurm, partition: [a]}\n",
            (
                "ep/config.yaml:4: engine.provider.partition: must be a name (text or an integer), "
                "got a list"
            ),
        ),
        (
            "provider: {type: kubernetes}\n",
            "ep/config.yaml:4: engine.provider.image: is required by the kubernetes provider",
        ),
        (
            "provider: {type: kubernetes, image: x, launcher: srun}\n",
            "ep/config.yaml:4: engine.provider.launcher: unknown key",
        ),
        (
            "provider: {type: kubernetes, image: x, persistent_volumes: [data]}\n",
            (
                "ep/config.yaml:4: engine.provider.persistent_volumes: must be a list of [claim, "
                "mount path] pairs"
            ),
        ),
        (
            "provider: {type: kubernetes, image: x, annotations: [a]}\n",
            "ep/config.yaml:4: engine.provider.annotations: must be a mapping of names to text",
        ),
        (
            "provider: {type: condor, transfer_input_files: a.txt}\n",
            "ep/config.yaml:4: engine.provider.transfer_input_files: must be a list of text",
        ),
        (
            "provider: {type: condor, mem_per_slot: -1}\n",
            "ep/config.yaml:4: engine.provider.mem_per_slot: must be a number > 0, got -1",
        ),
        (
            "provider: {type: slurm, launcher: srunn}\n",
            "ep/config.yaml:4: engine.provider.launcher: must be one of single_node, simple, srun",
        ),
        (
            "provider: {type: slurm, launcher: {type: srun, overides: x}}\n",
            (
                "ep/config.yaml:4: engine.provider.launcher.overides: unknown key; did you mean "
                "'overrides'?"
            ),
        ),
        (
            "provider: {type: local, launcher: {type: wrapped}}\n",
            "ep/config.yaml:4: engine.provider.launcher.prepend: is required by the wrapped launcher",
        ),
        (
            "provider: {type: local, launcher: {overrides: x}}\n",
            "ep/config.yaml:4: engine.provider.launcher.type: is required: one of single_node",
        ),
        (
            "max_workers: 4\n",
            (
                "ep/config.yaml:4: engine.max_workers: applies only to engine type process; for "
                "parsl set max_workers_per_node (workers on each node)"
            ),
        ),
        (
            "max_workers_per_node: 0\n",
            "ep/config.yaml:4: engine.max_workers_per_node: must be an integer >= 1",
        ),
        (
            "strategy: fast\n",
            (
                "ep/config.yaml:4: engine.strategy: must be one of simple, htex_auto_scale, none, "
                "got 'fast'"
            ),
        ),
        (
            "max_idletime: 0\n",
            "ep/config.yaml:4: engine.max_idletime: must be a number of seconds > 0",
        ),
        ("strategy_period: x\n", "ep/config.yaml:4: engine.strategy_period: must be a number"),
        ("address: 10\n", "ep/config.yaml:4: engine.address: must be a host name or IP address"),
        (
            "init_blocks: 3\nmax_blocks: 2\n",
            "ep/config.yaml:4: engine.init_blocks: must not exceed max_blocks (2)",
        ),
    ],
)
def test_each_problem_names_key_and_line(engine, expected):
    found = problems(parsl(engine))
    assert any(p.startswith(expected) for p in found), found


def test_parsl_only_keys_under_the_process_engine():
    found = problems(URL + "engine:\n  max_workers_per_node: 2\n  max_idletime: 5\n")
    assert found == [
        (
            "ep/config.yaml:3: engine.max_workers_per_node: applies only to engine type parsl "
            "(this engine is process)"
        ),
        (
            "ep/config.yaml:4: engine.max_idletime: applies only to engine type parsl (this engine "
            "is process)"
        ),
    ]


def test_sandbox_applies_only_to_the_process_engine():
    [found] = problems(parsl("", top="sandbox: bwrap\n"))
    assert found.startswith("ep/config.yaml:2: sandbox: applies only to engine type process")


def test_every_provider_problem_is_reported_at_once():
    found = problems(
        parsl(
            """\
            provider:
              type: slurm
              partition: 7.5
              walltime: soon
              launcher: {type: srun, overrides: 3}
            """
        )
    )
    assert [p.split(":")[1] for p in found] == ["6", "7", "8"]
