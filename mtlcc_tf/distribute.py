"""Distribution strategy selection, chief and worker identity, and per-worker input sharding."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time

import tensorflow as tf
from absl import logging


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error


def task_from_tf_config() -> tuple[str | None, int]:
    """(task type, task index) from the TF_CONFIG environment variable, (None, 0) without it."""
    task = _tf_config().get("task", {})
    return task.get("type"), int(task.get("index", 0))


def other_tasks() -> list[str]:
    """`type index at address` of every other task of TF_CONFIG's cluster (for messages)."""
    this = task_from_tf_config()
    return [
        f"{task_type} {index} at {address}"
        for task_type, addresses in _tf_config().get("cluster", {}).items()
        for index, address in enumerate(addresses)
        if (task_type, index) != this
    ]


def check_tf_config() -> None:
    """Raises ValueError unless TF_CONFIG describes a cluster and this process's task in it."""
    config = _tf_config()
    task_type, task_index = task_from_tf_config()
    tasks = config.get("cluster", {}).get(task_type or "", [])
    if not config.get("cluster") or task_type is None or task_index >= len(tasks):
        raise ValueError(
            "--strategy=multi_worker needs TF_CONFIG with a 'cluster' and this process's 'task' "
            f"in it (see docs/distributed.md); TF_CONFIG={os.environ.get('TF_CONFIG', '')!r}"
        )


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class PeersMissingError(ValueError):
    """Some tasks of TF_CONFIG's cluster did not answer within the connection timeout."""


@contextlib.contextmanager
def _sigterm_raises(what: str):
    """SIGTERM ends the wait at once with status 143 (a Python handler, so TensorFlow's
    coordination service, not started yet, cannot swallow it)."""

    def handler(signum, frame):
        print(f"SIGTERM while {what}: exiting before training (status 143)", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_peers(timeout_s: float, poll_s: float = 0.5) -> None:
    """Waits until every other collective task of TF_CONFIG's cluster accepts TCP connections
    on its port, before MultiWorkerMirroredStrategy connects.

    TensorFlow's own connection phase blocks in C++, holding Python's lock, and catches SIGTERM
    without ending the process: a worker whose peer never comes would wait forever. This
    rendezvous runs in Python first. Each task listens on its own TF_CONFIG port (a plain socket
    that only completes TCP handshakes, closed before TensorFlow's server binds the port) and
    connects to every other task's port until all have answered. During the wait SIGTERM ends
    the process with status 143. What remains unguarded is the short window between this
    rendezvous and the strategy's own connection (a peer that dies inside it).

    Raises:
        ValueError: this task's port is taken by another process (names the address).
        PeersMissingError: `timeout_s` passed; names the tasks that never answered.
    """
    check_tf_config()
    config = _tf_config()
    this = task_from_tf_config()
    own_address = config["cluster"][this[0]][this[1]]
    peers = {
        f"{task_type} {index} at {address}": _split_address(address)
        for task_type, addresses in config["cluster"].items()
        if task_type in ("chief", "worker")
        for index, address in enumerate(addresses)
        if (task_type, index) != this
    }
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _split_address(own_address)[1]))
    except OSError as error:
        listener.close()
        raise ValueError(
            f"could not start the server of this task ({this[0]} {this[1]} of TF_CONFIG) at "
            f"{own_address}: {error.strerror}; is the port in use by another process?"
        ) from error
    listener.listen(64)
    missing = dict(peers)
    start = last_report = time.monotonic()
    what = f"waiting for {', '.join(missing)}"
    if missing:
        logging.info("%s (for at most %g s)", what, timeout_s)
    try:
        with _sigterm_raises(what):
            while missing:
                for name, (host, port) in list(missing.items()):
                    with contextlib.suppress(OSError):
                        socket.create_connection((host, port), timeout=1.0).close()
                        del missing[name]
                now = time.monotonic()
                if not missing:
                    break
                if now - start > timeout_s:
                    raise PeersMissingError(
                        f"{this[0]} {this[1]} waited {timeout_s:g} s for {', '.join(missing)}, "
                        "which never answered; start every task of TF_CONFIG"
                    )
                if now - last_report >= 30:
                    logging.info("waiting for %s (%.0f s)", ", ".join(missing), now - start)
                    last_report = now
                time.sleep(poll_s)
    finally:
        listener.close()
    if peers:
        logging.info("all %d other tasks answered: connecting", len(peers))


def is_chief_task(strategy_name: str) -> bool:
    """Whether this process is the chief, known before the strategy exists (from TF_CONFIG).

    Only multi-worker runs have non-chief processes. The chief is the task of type 'chief', or
    worker 0 when the cluster has no 'chief' task (MultiWorkerMirroredStrategy's convention).
    """
    if strategy_name != "multi_worker":
        return True
    task_type, task_index = task_from_tf_config()
    cluster = _tf_config().get("cluster", {})
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in cluster


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices, so that `mirrored` has replicas on a
    machine without GPUs (to try data-parallel training, not to go faster: they share the cores).

    Call it before any TensorFlow op runs.

    Raises:
        ValueError: `num_devices` < 1, or TensorFlow already started (names the cause).
    """
    if num_devices < 1:
        raise ValueError(f"--cpu_devices={num_devices}: must be >= 1")
    if num_devices == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as error:
        message = f"--cpu_devices={num_devices}: too late, TensorFlow started ({error})"
        raise ValueError(message) from error
    logging.info("split the CPU into %d logical devices", num_devices)


def create_strategy(name: str) -> tf.distribute.Strategy:
    """Creates the strategy `name` (see `RuntimeConfig.strategy`).

    Call it before any other TensorFlow op: MultiWorkerMirroredStrategy must configure the
    collective runtime before the eager context starts.

    Raises:
        ValueError: for an unknown name or a multi_worker run without TF_CONFIG.
    """
    if name == "multi_worker":
        check_tf_config()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (tf.errors.OpError, RuntimeError) as error:
            task_type, index = task_from_tf_config()
            address = _tf_config()["cluster"][task_type][index]
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(
                f"could not start the server of this task ({task_type} {index} of TF_CONFIG) at "
                f"{address}: {first_line}; is the port in use by another process?"
            ) from error
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0].name)
    if name == "mirrored":
        # Several logical CPUs (tests, or a CPU-only machine split on purpose) count as replicas
        # when there is no GPU.
        devices = [device.name for device in (gpus or cpus)]
        return tf.distribute.MirroredStrategy(devices)
    raise ValueError(f"unknown strategy {name!r}")


def _resolver(strategy: tf.distribute.Strategy):
    """The cluster resolver of a multi-worker strategy; None for single-process strategies."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        if resolver is not None and resolver.task_type is not None:
            return resolver
    return None


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of worker processes (input pipelines) taking part."""
    resolver = _resolver(strategy)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """Index of this worker among the input pipelines (chief first), 0 for one process."""
    resolver = _resolver(strategy)
    if resolver is None:
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return 0
    return int(resolver.task_id) + (1 if has_chief else 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes summaries, configs and the real checkpoints."""
    resolver = _resolver(strategy)
    if resolver is None:
        return True
    if resolver.task_type == "chief":
        return True
    return worker_index(strategy) == 0


def input_context(strategy: tf.distribute.Strategy) -> tf.distribute.InputContext:
    """The InputContext that `distribute_datasets_from_function` would give this worker."""
    return tf.distribute.InputContext(
        num_input_pipelines=num_workers(strategy),
        input_pipeline_id=worker_index(strategy),
        num_replicas_in_sync=strategy.num_replicas_in_sync,
    )


def num_local_replicas(strategy: tf.distribute.Strategy) -> int:
    return strategy.num_replicas_in_sync // num_workers(strategy)


def gather_worker_rows(strategy: tf.distribute.Strategy, row) -> list[list[float]]:
    """Every worker's `row` (equal lengths), on every worker: [num_workers][len(row)], in
    worker order (the chief first). One process: [row].

    A SUM all-reduce of a matrix in which each worker fills its own row (through its first
    local replica only), since `tf.distribute` reduces by SUM or MEAN only. Values travel as
    float64: integers up to 2**53 stay exact.
    """
    workers = num_workers(strategy)
    if workers == 1:
        return [list(row)]
    local = num_local_replicas(strategy)
    matrix = [[0.0] * len(row) for _ in range(workers)]
    matrix[worker_index(strategy)] = [float(value) for value in row]
    mine = tf.constant(matrix, tf.float64)

    @tf.function
    def all_sum():
        def contribute():
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group % local, 0)
            value = tf.where(first, mine, tf.zeros_like(mine))
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

        return strategy.experimental_local_results(strategy.run(contribute))[0]

    return all_sum().numpy().tolist()


def split_stacked(strategy: tf.distribute.Strategy, stacked: dict) -> object:
    """Turns this worker's batches stacked on a leading replica axis into per-replica values.

    The training input is a plain tf.data iterator of [num_local_replicas, per_replica_batch,
    ...] elements rather than a distributed iterator, because TF 2.21 cannot checkpoint
    distributed iterators and the input position must be checkpointed for an exact resume.

    Args:
        strategy: the strategy whose replicas get the batches.
        stacked: dict of tensors [num_local_replicas, per_replica_batch, ...].

    Returns:
        A per-replica value (a plain dict under the default strategy) for `strategy.run`.
    """
    first_local = worker_index(strategy) * num_local_replicas(strategy)

    def value_fn(context: tf.distribute.experimental.ValueContext) -> dict:
        local = context.replica_id_in_sync_group - first_local
        return {key: value[local] for key, value in stacked.items()}

    return strategy.experimental_distribute_values_from_function(value_fn)


def log_strategy(strategy: tf.distribute.Strategy) -> None:
    logging.info(
        "strategy %s: %d replicas in sync, %d worker(s), this is worker %d%s",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        num_workers(strategy),
        worker_index(strategy),
        " (chief)" if is_chief(strategy) else "",
    )
