"""The baseline's convolutions one at a time, vnca against PyTorch: each layer's forward pass and its
backward pass (the gradients of its input, unless that is the image, and of its weights).

    pip install torch==2.13.0      # a benchmark dependency only
    JAX_NUM_CPU_DEVICES=1 taskset -c 0 python benchmarks/baseline_layers.py             # one core
    JAX_NUM_CPU_DEVICES=1 taskset -c 0 python benchmarks/baseline_layers.py --width 16  # laptop widths
    ... --json benchmarks/results/baseline-layers-cpu-1core.json      # add the run to the record

One core, so that the figures say how much work each side's layer is, not how it spreads over cores
(`baseline_step.py --trace` for that). The batch defaults to 16, a device's share of the paper's 32
on a 2-core machine. Both sides run in one process, in turns, `--repeats` times; medians in ms.
"""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch

from baseline_step import timeit  # median seconds, after two warm-up calls
from models import header  # benchmarks/models.py
from vnca.baseline import decoder_channels
from vnca.files import atomic_write
from vnca.layers import Conv
from vnca.vae import ENCODER_STRIDES, encoder_channels

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)


def layers(width: int):
    """(name, c_in, c_out, input side, transposed, stride) of the baseline's 5x5 convolutions."""
    enc, dec, sides = encoder_channels(width), decoder_channels(width), [32]  # enc: the input first
    for stride in ENCODER_STRIDES:
        sides.append(sides[-1] // stride)
    return ([(f"encoder {i}", a, b, sides[i], False, s)
             for i, (a, b, s) in enumerate(zip(enc, enc[1:], ENCODER_STRIDES))]
            + [(f"decoder {i}", a, b, 2 << i, True, 2) for i, (a, b) in enumerate(zip(dec, dec[1:]))]
            + [("to logits", dec[-1], 1, 32, True, 1)])


def vnca_layer(c_in, c_out, side, transposed, stride, batch):
    layer = Conv(c_in, c_out, 5, stride=stride, padding=2, output_padding=int(transposed and stride == 2),
                 transposed=transposed, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (batch, side, side, c_in))

    @jax.jit
    def forward_backward(layer, x):  # a cotangent that depends on the output keeps the forward pass
        if c_in == 1:  # the image: no gradient
            y, back = jax.vjp(lambda l: jax.vmap(l)(x), layer)
        else:
            y, back = jax.vjp(lambda l, x: jax.vmap(l)(x), layer, x)
        return y.sum(), back(jnp.cos(y))
    return lambda: jax.block_until_ready(forward_backward(layer, x))


def torch_layer(c_in, c_out, side, transposed, stride, batch):
    if transposed:
        layer = torch.nn.ConvTranspose2d(c_in, c_out, 5, stride, 2, output_padding=int(stride == 2))
    else:
        layer = torch.nn.Conv2d(c_in, c_out, 5, stride, 2)
    x = torch.randn(batch, c_in, side, side, requires_grad=c_in > 1)  # the image: no gradient

    def forward_backward():
        layer.zero_grad(set_to_none=True); x.grad = None
        y = layer(x)
        y.backward(torch.cos(y.detach()))
    return forward_backward


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=32, help="32: the paper's channels; 16: the laptop's")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2, help="each side's time is the median of these")
    parser.add_argument("--json", help="also add this run to the runs in this file (one per commit and width)")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"baseline layers, width {args.width}, batch {args.batch}; forward and backward, ms; "
          f"{len(os.sched_getaffinity(0))} core(s), {jax.device_count()} JAX device(s); "
          f"JAX {jax.__version__}, PyTorch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{'layer':<12}{'in':>13}{'out':>13}{'vnca':>9}{'PyTorch':>9}{'ratio':>7}")
    totals, rows = np.zeros(2), []
    for name, c_in, c_out, side, transposed, stride in layers(args.width):
        runs = [make(c_in, c_out, side, transposed, stride, args.batch) for make in (vnca_layer, torch_layer)]
        times = np.median([[1000 * timeit(f, args.repeats) for f in runs] for _ in range(args.rounds)], axis=0)
        totals += times
        rows.append({"layer": name, "input": [side, side, c_in], "c_out": c_out, "transposed": transposed,
                     "stride": stride, "vnca_ms": float(times[0]), "pytorch_ms": float(times[1])})
        out = side * stride if transposed else side // stride
        print(f"{name:<12}{f'{side}x{side}x{c_in}':>13}{f'{out}x{out}x{c_out}':>13}"
              f"{times[0]:9.2f}{times[1]:9.2f}{times[1] / times[0]:7.2f}")
    print(f"{'all':<38}{totals[0]:9.1f}{totals[1]:9.1f}{totals[1] / totals[0]:7.2f}   (ratio: PyTorch / vnca)")
    if args.json:
        run = {"environment": {**header(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                               "cores": len(os.sched_getaffinity(0))},
               "width": args.width, "batch": args.batch, "unit": "ms, forward and backward", "layers": rows}
        runs = json.loads(open(args.json).read())["runs"] if os.path.exists(args.json) else []
        runs = [r for r in runs if (r["environment"]["commit"], r["width"], r["batch"])
                != (run["environment"]["commit"], args.width, args.batch)]
        atomic_write(args.json, json.dumps({"runs": runs + [run]}, indent=2).encode())


if __name__ == "__main__":
    main()
