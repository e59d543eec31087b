"""Where a ConvLSTM training step's time goes, on one thread: cells, layer norm, single ops.

Complements `train_step.py` (whole models, all threads) by timing, with TensorFlow pinned to one
thread and in process CPU time (so another job on a second core disturbs it little):

- one direction of a ConvLSTM, forward and backward through all steps (reference shape: batch 4,
  30 steps, 24 x 24 px, 15 channels, 64 filters, 3 x 3): our cell with the original's layer
  normalisation and reflect padding (with mtlcc_tf.ops' fused kernels, and without them), each
  of them off, both off (the stock layer's math), and the stock `keras.layers.ConvLSTM2D`;
- our `layer_norm` of the gate pre-activations [4, 24, 24, 256], forward and backward, as
  graph ops and XLA-compiled;
- single TensorFlow ops on a tensor of that shape (per call);
- where one direction's time goes by op type (a TensorFlow step trace, one thread), with the
  fused kernels and without them, and for our ConvGRU (`--trace-only`: the traces alone).

Run from the repository root:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/cell_costs.py     # ~3 min
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/cell_costs.py --trace-only
The last printed line is one JSON object with every figure (milliseconds).
"""

import argparse
import collections
import contextlib
import json
import time

import keras
import tensorflow as tf

from mtlcc_tf import ops
from mtlcc_tf.layers.cells import ConvGRUCell, ConvLSTMCell
from mtlcc_tf.layers.functional import layer_norm
from mtlcc_tf.layers.recurrence import run_recurrence


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--time", type=int, default=30)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--channels", type=int, default=15)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the fastest counts")
    parser.add_argument("--trace-only", action="store_true", help="only the traces by op type")
    return parser.parse_args()


def fastest_ms(function, repeats: int) -> float:
    """Milliseconds of process CPU time of the fastest of `repeats` calls (after one warm-up)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return round(best * 1000, 2)


def one_direction(args, normalization: bool, padding: str, fused: bool = True):
    """Forward and backward of one direction of our ConvLSTM, final cell state as the loss.

    Without `fused`, the step is traced (on its first call) with graph ops only.
    """
    cell = ConvLSTMCell(args.filters, normalization=normalization, padding=padding)
    cell.build((None, None, None, args.channels))
    inputs = tf.random.normal([args.time, args.batch, args.size, args.size, args.channels])
    lengths = tf.fill([args.batch], args.time)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            states, _ = run_recurrence(cell, cell.project_inputs(inputs), lengths)
            loss = tf.reduce_sum(tf.square(states[-1]))
        return tape.gradient(loss, cell.trainable_weights)

    if fused:
        return step

    def graph_ops_step():
        with ops.disabled():
            return step()

    return graph_ops_step


def stock_direction(args):
    """The same for `keras.layers.ConvLSTM2D` (zero padding, no normalisation)."""
    layer = keras.layers.ConvLSTM2D(args.filters, 3, padding="same")
    inputs = tf.random.normal([args.batch, args.time, args.size, args.size, args.channels])
    layer(inputs)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(inputs)))
        return tape.gradient(loss, layer.trainable_weights)

    return step


def layer_norm_calls(args, jit_compile: bool):
    """`time` calls of layer_norm on the gate pre-activations, forward and backward."""
    gates = 4 * args.filters
    shape = [args.batch, args.size, args.size, gates]
    values = [tf.random.normal(shape) for _ in range(args.time)]
    scale, offset = tf.Variable(tf.ones([gates])), tf.Variable(tf.zeros([gates]))

    def normalize(x):
        return layer_norm(x, 4, scale, offset, 1e-5)

    if jit_compile:
        normalize = tf.function(normalize, jit_compile=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = tf.add_n([tf.reduce_sum(normalize(x)) for x in values])
        return tape.gradient(loss, [*values, scale, offset])

    return step


def single_ops(args) -> dict:
    """Milliseconds per call of single ops on a [batch, size, size, 4 * filters] tensor."""
    gates = 4 * args.filters
    values = [tf.random.normal([args.batch, args.size, args.size, gates]) for _ in range(10)]
    per_sample = tf.random.normal([args.batch, 1, 1, gates])
    per_channel = tf.random.normal([gates])
    single = {
        "add_scalar": lambda x: x + 1.0,
        "square": tf.square,
        "multiply_same_shape": lambda x: x * x,
        "multiply_per_sample_channel": lambda x: x * per_sample,
        "bias_add": lambda x: tf.nn.bias_add(x, per_channel),
        "sigmoid": tf.sigmoid,
        "split_4": lambda x: tf.split(x, 4, axis=-1),
        "reduce_sum_over_height_width": lambda x: tf.reduce_sum(x, axis=[1, 2]),
        "reduce_sum_over_all_but_batch": lambda x: tf.reduce_sum(x, axis=[1, 2, 3]),
    }
    results = {}
    for name, op in single.items():
        calls = tf.function(lambda op=op: [op(x) for x in values])
        results[name] = round(fastest_ms(calls, args.repeats) / len(values), 3)
    return results


def time_by_op_type(args, fused: bool, cell_class=ConvLSTMCell, top: int = 10) -> dict:
    """Milliseconds per op type in a traced run of one direction (our cell, default settings).

    A TF1-style session run with FULL_TRACE after three warm-up runs: each op's duration, summed
    over the ops of its type. The sum is below `one_direction` (no tf.function overhead).
    """
    graph = tf.Graph()
    with graph.as_default(), contextlib.ExitStack() as stack:
        if not fused:
            stack.enter_context(ops.disabled())
        cell = cell_class(args.filters)
        cell.build((None, None, None, args.channels))
        inputs = tf.random.normal([args.time, args.batch, args.size, args.size, args.channels])
        states, _ = run_recurrence(
            cell, cell.project_inputs(inputs), tf.fill([args.batch], args.time)
        )
        gradients = tf.gradients(tf.reduce_sum(tf.square(states[-1])), cell.trainable_weights)
        initialize = tf.compat.v1.global_variables_initializer()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1
    )
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(initialize)
        for _ in range(3):
            session.run(gradients)
        metadata = tf.compat.v1.RunMetadata()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        session.run(gradients, options=options, run_metadata=metadata)
    micros = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            # timeline_label: "name = OpType(inputs)"
            op_type = node.timeline_label.split(" = ")[-1].split("(")[0]
            micros[op_type] += node.all_end_rel_micros
    times = {name: round(value / 1000, 1) for name, value in micros.most_common(top)}
    times["total"] = round(sum(micros.values()) / 1000, 1)
    return times


def time_cells_and_ops(args) -> tuple[dict, dict, dict]:
    """The timed sections: one direction of each variant, layer norm, single ops."""
    directions = {
        "ours_default": one_direction(args, True, "reflect"),
        "ours_default_graph_ops": one_direction(args, True, "reflect", fused=False),
        "ours_zero_padding": one_direction(args, True, "same"),
        "ours_no_normalization": one_direction(args, False, "reflect"),
        "ours_stock_math": one_direction(args, False, "same"),
        "stock_convlstm2d": stock_direction(args),
    }
    direction_ms = {}
    for name, step in directions.items():
        direction_ms[name] = fastest_ms(step, args.repeats)
        print(f"one direction, forward + backward, {name}: {direction_ms[name]} ms", flush=True)
    norm_ms = {
        "graph": fastest_ms(layer_norm_calls(args, False), args.repeats),
        "xla": fastest_ms(layer_norm_calls(args, True), args.repeats),
    }
    print(f"layer_norm of the gates, {args.time} calls, forward + backward: {norm_ms}", flush=True)
    ops_ms = single_ops(args)
    for name, value in ops_ms.items():
        print(f"op {name}: {value} ms per call", flush=True)
    return direction_ms, norm_ms, ops_ms


def main() -> None:
    args = parse_arguments()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel("ERROR")
    direction_ms, norm_ms, ops_ms = {}, {}, {}
    if not args.trace_only:
        direction_ms, norm_ms, ops_ms = time_cells_and_ops(args)
    trace_ms = {
        "ours_default": time_by_op_type(args, fused=True),
        "ours_default_graph_ops": time_by_op_type(args, fused=False),
        "ours_gru": time_by_op_type(args, fused=True, cell_class=ConvGRUCell, top=12),
    }
    for name, times in trace_ms.items():
        print(f"traced direction, {name}, ms by op type: {times}", flush=True)
    stock = direction_ms.get("stock_convlstm2d")
    print(
        json.dumps(
            {
                "threads": 1,
                "fused_kernels": ops.available(),
                "shape": {
                    "batch": args.batch,
                    "time": args.time,
                    "size": args.size,
                    "channels": args.channels,
                    "filters": args.filters,
                },  # fmt: skip
                "one_direction_ms": direction_ms,
                "relative_to_stock": {
                    name: round(value / stock, 3) for name, value in direction_ms.items() if stock
                },
                "layer_norm_gates_all_steps_ms": norm_ms,
                "single_op_ms_per_call": ops_ms,
                "traced_direction_ms_by_op_type": trace_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
