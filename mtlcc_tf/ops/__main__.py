"""Builds the fused CPU kernels now rather than on first use: `python -m mtlcc_tf.ops`.

Prints the library's path; exits with 1 (and why) where it cannot be built, in which case the
cells use graph ops. scripts/setup.sh runs it.
"""

import sys

from mtlcc_tf import ops


def main() -> int:
    try:
        print(ops.build(verbose=True))
    except RuntimeError as error:
        print(f"[mtlcc_tf.ops] not built, the cells will use graph ops: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
