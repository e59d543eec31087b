"""Distribution: strategy choice, MirroredStrategy on two logical CPUs, two workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from mtlcc_tf import distribute, fault_tolerance
from tests.test_train import REPOSITORY, TINY_FLAGS, checkpoint_steps, subprocess_env

# Runs in a fresh process: logical devices must be configured before TensorFlow initialises.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from data_pipeline.data_config import DataConfig
    from mtlcc_tf import distribute, metrics, optimization, train_lib, train_steps
    from mtlcc_tf.model_config import ModelConfig
    from mtlcc_tf.train_config import RuntimeConfig, TrainConfig

    root, model_dir = sys.argv[1:3]
    # No batch norm in the head: its statistics are per replica, so only the loss without it
    # is the same for one replica with the global batch and two replicas with half each.
    model_config = ModelConfig(num_classes=4, convrnn_filters=4, head="logits")
    train_config = TrainConfig(optimizer="sgd", learning_rate=0.5)
    rng = np.random.default_rng(0)
    batch = {  # [batch, time, height, width, channels]
        "inputs": rng.uniform(0, 1, (2, 4, 12, 12, 15)).astype(np.float32),
        "sequence_length": np.array([4, 2], np.int32),
        "labels": rng.integers(-1, 4, (2, 12, 12)).astype(np.int32),
    }
    batch["labels"][1, :8] = -1  # replicas with different numbers of known pixels

    def first_step(strategy):
        replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            model = train_lib.create_model(model_config, seed=1)
            optimizer = optimization.create_optimizer(train_config, 0.5, "float32")
            optimizer.build(model.trainable_variables)
            confusion = metrics.ConfusionMatrix(4)
            step = tf.Variable(0, dtype=tf.int64)
        stacked = {k: v.reshape(replicas, -1, *v.shape[1:]) for k, v in batch.items()}
        iterator = iter(tf.data.Dataset.from_tensors(stacked).repeat())
        before = np.asarray(tf.convert_to_tensor(model.trainable_variables[0]))
        function = train_steps.make_train_function(
            strategy, model, optimizer, confusion, step, jit_compile=False)
        loss, _ = function(iterator, tf.constant(False))
        after = np.asarray(tf.convert_to_tensor(model.trainable_variables[0]))
        return float(loss), before, after, confusion.result().numpy()

    default = first_step(tf.distribute.get_strategy())
    mirrored_strategy = distribute.create_strategy("mirrored")
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = first_step(mirrored_strategy)

    result = train_lib.train_and_evaluate(
        ModelConfig(num_classes=4, convrnn_filters=4),
        DataConfig(root=root, batch_size=2, temporal_samples=4),
        DataConfig(root=root, partition="test", batch_size=2, training=False),
        TrainConfig(train_steps=2, num_image_tiles=1, ema_decay=0.9),
        RuntimeConfig(strategy="mirrored"), model_dir, strategy=mirrored_strategy)
    last = tf.train.latest_checkpoint(model_dir + "/checkpoints")
    average_updates = int(tf.train.load_checkpoint(last).get_tensor(
        "weight_average/updates/.ATTRIBUTES/VARIABLE_VALUE"))
    print(json.dumps({
        "losses": [default[0], mirrored[0]],
        "same_initial_weights": bool((default[1] == mirrored[1]).all()),
        "max_weight_difference": float(np.abs(default[2] - mirrored[2]).max()),
        "weight_change": float(np.abs(default[2] - default[1]).max()),
        "confusions_equal": bool((default[3] == mirrored[3]).all()),
        "step": result.step, "num_pixels": result.validation["num_pixels"],
        "average_updates": average_updates,
    }))
    """
)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_is_chief_task_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief_task("multi_worker")
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for index, chief in ((0, True), (1, False)):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribute.is_chief_task("multi_worker") is chief
        assert distribute.is_chief_task("default")  # TF_CONFIG only matters for multi_worker
    with_chief = {
        "cluster": {**cluster, "chief": ["127.0.0.1:3"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(with_chief))
    assert not distribute.is_chief_task("multi_worker")


def test_default_strategy_and_errors(monkeypatch):
    strategy = distribute.create_strategy("default")
    assert strategy.num_replicas_in_sync == 1 and distribute.is_chief(strategy)
    assert distribute.input_context(strategy).num_input_pipelines == 1
    assert distribute.create_strategy("auto").num_replicas_in_sync == 1  # no GPUs here
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.create_strategy("multi_worker")
    worker_2_of_2 = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(worker_2_of_2))
    with pytest.raises(ValueError, match="'task'"):
        distribute.check_tf_config()


def test_split_stacked_under_the_default_strategy():
    stacked = {"labels": tf.reshape(tf.range(6), [1, 2, 3])}
    split = distribute.split_stacked(tf.distribute.get_strategy(), stacked)
    assert split["labels"].shape == (2, 3)


def test_mirrored_two_cpus_matches_the_default_strategy(tmp_path):
    from tests.conftest import write_random_root

    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=6, pix10=12, nobs=6)
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), root, str(tmp_path / "run")],
        cwd=REPOSITORY,
        env={**subprocess_env(), "PYTHONPATH": REPOSITORY},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    default_loss, mirrored_loss = result["losses"]
    assert mirrored_loss == pytest.approx(default_loss, rel=1e-5)
    assert result["same_initial_weights"]
    # SGD: the update is proportional to the gradient, so a wrongly scaled loss would show.
    assert result["weight_change"] > 1e-4 and result["max_weight_difference"] < 1e-6
    assert result["confusions_equal"]
    assert result["step"] == 2 and result["num_pixels"] > 0
    assert result["average_updates"] == 2  # a weight average trains under the mirrored strategy


def run_workers(root: str, model_dir: str, train_steps: int, logs_dir) -> list[str]:
    """Runs two multi_worker processes to `train_steps`; returns their logs."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    arguments = [
        f"--datadir={root}",
        f"--model_dir={model_dir}",
        f"--train_steps={train_steps}",
        "--strategy=multi_worker",
        "--num_image_tiles=0",
        "--max_eval_batches=1",
        *[flag for flag in TINY_FLAGS if not flag.startswith("--strategy")],
    ]
    paths = [logs_dir / f"worker{index}_{train_steps}.log" for index in range(2)]
    processes, logs = [], []
    for index, path in enumerate(paths):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(path, "w")  # noqa: SIM115 - closed below
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "mtlcc_tf.train", *arguments],
                cwd=REPOSITORY,
                env={**subprocess_env(), "TF_CONFIG": tf_config},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        returncodes = [process.wait(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for log in logs:
            log.close()
    texts = [path.read_text() for path in paths]
    assert returncodes == [0, 0], "\n".join(text[-2000:] for text in texts)
    return texts


@pytest.mark.slow
def test_two_workers_train_together_and_resume(tmp_path):
    from tests.conftest import write_random_root

    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=6, pix10=12, nobs=6)
    model_dir = str(tmp_path / "run")
    run_workers(root, model_dir, 4, tmp_path)
    assert checkpoint_steps(os.path.join(model_dir, "checkpoints"))[-1] == 4
    worker_checkpoints = os.path.join(model_dir, "workers", "worker_1", "checkpoints")
    assert checkpoint_steps(worker_checkpoints)[-1] == 4  # its own input position
    assert os.path.exists(os.path.join(model_dir, "flags.txt"))  # written by the chief
    # A kill while worker 1 wrote its step-4 checkpoint: the chief has 1-4, worker 1 has 1-3.
    # Started again with more steps (on new ports), both resume at step 3, the newest they both
    # have, and train in step to the end.
    drop_newest_checkpoint(worker_checkpoints)
    logs = run_workers(root, model_dir, 6, tmp_path)
    assert all("resuming at step 3 of 6" in log for log in logs), logs[1][-2000:]
    assert "newest checkpoints are at steps [4, 3]: all resume at step 3" in logs[0]
    assert checkpoint_steps(os.path.join(model_dir, "checkpoints"))[-1] == 6
    # Worker 1's checkpoints lost altogether: it restores the chief's step and reads afresh.
    shutil.rmtree(worker_checkpoints)
    logs = run_workers(root, model_dir, 8, tmp_path)
    assert all("resuming at step 6 of 8" in log for log in logs), logs[1][-2000:]
    assert "this worker has no checkpoint of step 6" in logs[1]
    assert checkpoint_steps(worker_checkpoints)[-1] == 8


def drop_newest_checkpoint(directory: str) -> None:
    """What a kill during the newest checkpoint's write leaves: the index at the one before
    (TensorFlow updates it only once a checkpoint is written), the new files incomplete."""
    state = tf.train.get_checkpoint_state(directory)
    paths = list(state.all_model_checkpoint_paths)
    for path in tf.io.gfile.glob(f"{os.path.join(directory, paths[-1])}.*"):
        os.remove(path)
    tf.compat.v1.train.update_checkpoint_state(
        directory, paths[-2], all_model_checkpoint_paths=paths[:-1],
        all_model_checkpoint_timestamps=list(state.all_model_checkpoint_timestamps)[:-1],
    )  # fmt: skip


def test_workers_agree_on_the_newest_step_all_of_them_have():
    assert fault_tolerance.agree_on_step([[10, 20, 30], [10, 20, 30]]) == (30, "")
    step, why = fault_tolerance.agree_on_step([[10, 20, 30], [10, 20]])
    assert step == 20 and "[30, 20]" in why
    step, why = fault_tolerance.agree_on_step([[20, 30], []])
    assert step == 30 and "chief's step 30" in why
    step, why = fault_tolerance.agree_on_step([[], [10]])
    assert step is None and "starts afresh" in why
    assert fault_tolerance.agree_on_step([[], []])[0] is None


def test_cpu_devices_give_mirrored_training_replicas_on_a_cpu(tmp_path):
    from tests.conftest import write_random_root
    from tests.test_train import run_module

    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=6, pix10=12, nobs=6)
    done = run_module(
        f"--datadir={root}", f"--model_dir={tmp_path}/run", "--strategy=mirrored",
        "--cpu_devices=2", "--train_steps=2", "--batchsize=2", "--convrnn_filters=2",
        "--num_image_tiles=0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas in sync" in done.stderr


def test_a_port_in_use_is_named(tmp_path):
    """The worker's own port taken by another process: exit 1 naming the address, promptly."""
    from tests.conftest import write_random_root

    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=4, pix10=12, nobs=5)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "-m", "mtlcc_tf.train", f"--datadir={root}",
             f"--model_dir={tmp_path / 'run'}", "--train_steps=2", "--strategy=multi_worker",
             "--num_image_tiles=0", "--convrnn_filters=2", "--batchsize=2"],
            cwd=REPOSITORY, env={**subprocess_env(), "TF_CONFIG": tf_config},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"at 127.0.0.1:{ports[0]}" in done.stderr and "port in use" in done.stderr


def set_cluster(monkeypatch, ports: list[int], index: int) -> None:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    task = {"type": "worker", "index": index}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))


def test_wait_for_peers_returns_once_every_peer_answers(monkeypatch):
    ports = free_ports(2)
    set_cluster(monkeypatch, ports, index=0)
    with socket.socket() as peer:  # worker 1, already listening
        peer.bind(("127.0.0.1", ports[1]))
        peer.listen()
        distribute.wait_for_peers(timeout_s=10, poll_s=0.05)
    # Its own port is free again for TensorFlow's server.
    with socket.socket() as server:
        server.bind(("", ports[0]))


def test_wait_for_peers_names_the_tasks_that_never_answered(monkeypatch):
    ports = free_ports(3)
    set_cluster(monkeypatch, ports, index=1)
    with socket.socket() as peer:  # worker 2 answers, worker 0 never comes
        peer.bind(("127.0.0.1", ports[2]))
        peer.listen()
        with pytest.raises(distribute.PeersMissingError) as caught:
            distribute.wait_for_peers(timeout_s=0.5, poll_s=0.05)
    message = str(caught.value)
    assert f"worker 0 at 127.0.0.1:{ports[0]}" in message
    assert "worker 2" not in message and message.startswith("worker 1 waited 0.5 s")


def test_a_lone_worker_exits_after_the_connect_timeout_and_ends_on_sigterm(tmp_path):
    """The peer never comes: exit 1 naming it after --connect_timeout; SIGTERM ends it at once."""
    from tests.conftest import write_random_root

    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=4, pix10=12, nobs=5)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = {
        **subprocess_env(),
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}),
    }
    command = [
        sys.executable, "-m", "mtlcc_tf.train", f"--datadir={root}",
        f"--model_dir={tmp_path / 'run'}", "--train_steps=2", "--strategy=multi_worker",
        "--num_image_tiles=0", "--convrnn_filters=2", "--batchsize=2",
    ]  # fmt: skip
    done = subprocess.run(
        [*command, "--connect_timeout=2"],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"waited 2 s for worker 1 at 127.0.0.1:{ports[1]}" in done.stderr
    assert not os.path.exists(tmp_path / "run" / "flags.txt")

    log = tmp_path / "lone.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, cwd=REPOSITORY, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 120
            while "waiting for worker 1" not in log.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=10)
        finally:
            process.kill()
    assert returncode == 143, log.read_text()[-2000:]
    assert "SIGTERM while waiting for worker 1" in log.read_text()
