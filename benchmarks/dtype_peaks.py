"""Matmul and convolution speed of this CPU in float32, bfloat16 and float16.

Shows whether reduced precision can speed training up here at all: a 2048² matmul and the
ConvLSTM's recurrent convolution at the reference shape (3 x 3, 64 -> 256 channels, batch 4,
24 x 24 px, padded input), each the fastest of several timed calls, all threads.

Run from the repository root:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/dtype_peaks.py     # ~30 s
The last printed line is one JSON object with every figure (GFLOP/s).
"""

import argparse
import json
import time

import tensorflow as tf

DTYPES = (tf.float32, tf.bfloat16, tf.float16)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls; the fastest counts")
    return parser.parse_args()


def fastest_gflops(function, flops: float, repeats: int) -> float:
    function().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function().numpy()
        best = min(best, time.perf_counter() - start)
    return round(flops / best / 1e9, 1)


def main() -> None:
    args = parse_arguments()
    n = args.matmul_size
    batch, size, channels, filters = 4, 24, 64, 256
    results = {}
    for dtype in DTYPES:
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
        x = tf.cast(tf.random.normal([batch, size + 2, size + 2, channels]), dtype)
        k = tf.cast(tf.random.normal([3, 3, channels, filters]), dtype)
        matmul = tf.function(lambda a=a, b=b: tf.matmul(a, b))
        conv = tf.function(lambda x=x, k=k: tf.nn.conv2d(x, k, 1, "VALID"))
        conv_flops = 2 * batch * size * size * 9 * channels * filters
        results[dtype.name] = {
            "matmul_gflops": fastest_gflops(matmul, 2 * n**3, args.repeats),
            "conv3x3_64_256_gflops": fastest_gflops(conv, conv_flops, 2 * args.repeats),
        }
        print(f"{dtype.name:>9}: {results[dtype.name]}", flush=True)
    print(json.dumps({"tensorflow": tf.__version__, "gflops": results}))


if __name__ == "__main__":
    main()
