"""`vnca evaluate` for a run of run.py: its changes patched in first, so its checkpoint loads.

    python evaluate.py RUN --images 500 --out RUN/evaluation-500.json
"""
import sys

import patches
from vnca import cli

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

args = patches.saved(sys.argv[1])
if args is not None:
    args.warm = ""
    patches.apply(args, args.steps)
sys.exit(cli.main(["evaluate", *sys.argv[1:]]))
