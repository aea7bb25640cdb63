"""Issue 36: one test image's K = 128 bound of a shipped model: as image_bounds now chooses (one device,
batch 1) against the old default (batch 8 over all devices). Compiled first, then the median of 5.

    python benchmarks/one_image.py doubling-laptop nondoubling-laptop > benchmarks/results/one-image-cpu-2core.json
"""
import json, statistics, sys, time
import jax, numpy as np
from vnca.devices import use_cpu_cores
use_cpu_cores()
from vnca import pretrained
from vnca.data import load_binarized_mnist
from vnca.evaluate import image_bounds
from vnca.mesh import data_mesh
x = load_binarized_mnist().test[:1].astype(np.float32)
out = {"devices": jax.device_count(), "jax": jax.__version__}
for name in sys.argv[1:]:
    model = pretrained.load(name)
    for label, kw in [("now", {}), ("before", dict(mesh=data_mesh(), batch_size=4 * jax.device_count()))]:
        image_bounds(model, x, jax.random.key(0), **kw)
        times = []
        for _ in range(5):
            t = time.perf_counter(); b = image_bounds(model, x, jax.random.key(0), **kw); times.append(time.perf_counter() - t)
        out[f"{name} {label}"] = {"seconds": statistics.median(times), "bound": float(b[0])}
print(json.dumps(out, indent=1))
