"""The time loop of one direction of a convolutional recurrent layer, unrolled or not."""

import tensorflow as tf

from mtlcc_tf.layers.cells import ConvRecurrentCell


def _last_real_step(sequences: tf.Tensor, sequence_length: tf.Tensor) -> tf.Tensor:
    """[time, batch, ...] -> [batch, ...] at step `sequence_length - 1` (zeros if it is 0)."""
    batch_index = tf.range(tf.shape(sequence_length)[0])
    step_index = tf.clip_by_value(sequence_length - 1, 0, tf.shape(sequences)[0] - 1)
    last = tf.gather_nd(sequences, tf.stack([step_index, batch_index], axis=1))
    return tf.where((sequence_length > 0)[:, None, None, None], last, tf.zeros_like(last))


def run_recurrence(
    cell: ConvRecurrentCell,
    projected: tf.Tensor,
    sequence_length: tf.Tensor,
    unroll: bool = True,
    num_collected: int = 0,
) -> tuple[tuple[tf.Tensor, ...], tuple[tf.Tensor, ...]]:
    """Runs `cell` over time; steps at or past `sequence_length` do not count.

    Only the hidden-to-hidden work happens per step: `projected` already holds the
    input-to-hidden convolution of every step.

    Unrolled (needs a static number of steps), the loop runs over all steps unmasked and the
    final states are read at each sample's last real step. Since padding is at the end, this
    equals holding the states at padding steps, without two selects per step. Otherwise a
    `tf.while_loop` holds the states with `tf.where` and reads its per-step inputs through a
    TensorArray (indexing a captured tensor would make the gradient write a full-size tensor
    every step).

    Args:
        cell: The cell; its `step` is called once per time step.
        projected: [time, batch, height, width, gates], `cell.project_inputs` of the inputs.
        sequence_length: [batch] int32, real steps per sample (padding at the end).
        unroll: Unroll the loop when the number of steps is static.
        num_collected: How many of the cell's states (in `cell.state_names` order, hidden
            first) to return for every step.

    Returns:
        The final states, each [batch, height, width, filters] float32, and the collected
        per-step states, each [time, batch, height, width, filters] float32. Collected states
        at padding steps are unspecified: mask them.
    """
    states = cell.initial_state(projected)
    num_steps = projected.shape[0]
    if unroll and num_steps is not None:
        steps = []
        for projected_step in tf.unstack(projected):
            _, states = cell.step(projected_step, states)
            steps.append(states)
        stacked = [None] * len(states)
        final_states = []
        for index, states_over_time in enumerate(zip(*steps, strict=True)):
            # [time, batch, height, width, filters]
            stacked[index] = tf.stack(states_over_time)
            final_states.append(_last_real_step(stacked[index], sequence_length))
        return tuple(final_states), tuple(stacked[:num_collected])

    num_steps = tf.shape(projected)[0]
    projected_steps = tf.TensorArray(projected.dtype, size=num_steps).unstack(projected)
    outputs = tuple(
        tf.TensorArray(tf.float32, size=num_steps, element_shape=state.shape)
        for state in states[:num_collected]
    )

    def body(step, states, outputs):
        _, new_states = cell.step(projected_steps.read(step), states)
        keep = (step < sequence_length)[:, None, None, None]
        states = tuple(
            tf.where(keep, new, old) for new, old in zip(new_states, states, strict=True)
        )
        outputs = tuple(
            output.write(step, state)
            for output, state in zip(outputs, states[:num_collected], strict=True)
        )
        return step + 1, states, outputs

    # maximum_iterations bounds the gradient's per-step accumulators, which XLA needs.
    _, states, outputs = tf.while_loop(
        lambda step, *_: step < num_steps,
        body,
        (tf.constant(0), states, outputs),
        maximum_iterations=num_steps,
    )
    return states, tuple(output.stack() for output in outputs)
