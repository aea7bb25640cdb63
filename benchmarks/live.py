"""The live VNCA's speed in a browser: NCA steps per second of `_static/vnca-live.js` in headless Chromium,
the drawing pad's encoding time, and the live page's weight.

    python benchmarks/live.py --json benchmarks/results/live-chromium-2core.json

Writes the two laptop-scale NCA models' files for the page (`vnca.live.export_for_browser`), serves
them with the script from a local folder, and times in Chromium: the non-doubling decoder's step on
its 32x32 grid (what the page runs at its chosen steps per second), and one whole growth of the
doubling decoder (5 doublings, 40 steps: what the page runs for every slider move); the encoder q(z|x)
on one 32x32 image (what the drawing pad runs once a stroke ends); and the mounted demo itself, its
speed slider at "as fast as it goes", with the log p chart and the growing samples drawn: NCA steps
per second over `--seconds` of the page running. The page has one implementation, plain JavaScript;
each figure but the last is the median of `--repeats` timings.
"""

import argparse
import functools
import http.server
import json
import os
import platform
import statistics
import tempfile
import threading
from pathlib import Path

from models import _commit  # benchmarks/models.py
from vnca.live import export_for_browser

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="non-doubling steps per timing")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the mounted demo runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="vnca-live-bench-"))
    for name in ("nondoubling-laptop", "doubling-laptop"):
        export_for_browser(name, folder / f"{name}.vncaweb")
    (folder / "vnca-live.js").write_bytes((ROOT / "_static" / "vnca-live.js").read_bytes())
    (folder / "vnca.css").write_bytes((ROOT / "_static" / "vnca.css").read_bytes())
    (folder / "index.html").write_text('<!doctype html><link rel="icon" href="data:,">'
                                       '<script src="vnca-live.js"></script>')
    (folder / "demo.html").write_text('<!doctype html><link rel="icon" href="data:,">'
                                      '<link rel="stylesheet" href="vnca.css"><script src="vnca-live.js"></script>'
                                      '<div class="vnca-live" id="nd" data-model="nondoubling-laptop.vncaweb"></div>')
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/index.html")
        timings = page.evaluate("""async ([repeats, steps]) => {
            const nd = await VNCALive.load("nondoubling-laptop.vncaweb");
            const db = await VNCALive.load("doubling-laptop.vncaweb");
            const {state, side} = nd.seed(nd.latent(0));
            for (let s = 0; s < 10; s++) nd.step(state, side, 1);  // warm up the JIT
            db.growDoubling(db.latent(0));
            const image = nd.examples.images.data.subarray(0, 1024);
            nd.encoder.encode(image);
            const step = [], grow = [], encode = [];
            for (let r = 0; r < repeats; r++) {
                let e = performance.now();
                nd.encoder.encode(image);
                encode.push(performance.now() - e);
                let t = performance.now();
                for (let s = 0; s < steps; s++) nd.step(state, side, 1);
                step.push(steps / ((performance.now() - t) / 1000));
                t = performance.now();
                db.growDoubling(db.latent(0));
                grow.push(performance.now() - t);
            }
            return {step, grow, encode, agent: navigator.userAgent};
        }""", [args.repeats, args.steps])
        # the page as a reader has it: the drawing encoded, the chart and the samples drawn
        page.goto(f"http://127.0.0.1:{httpd.server_port}/demo.html")
        page.wait_for_function("() => document.querySelector('.vnca-live-ready')")
        page.evaluate("""() => { const s = document.querySelectorAll('#nd input[type=range]')[0];
                                 s.value = s.max; s.dispatchEvent(new Event('input')); }""")
        page.click("#nd button:has-text('Next test digit')")
        start = page.evaluate("() => [document.getElementById('nd').vnca.steps(), performance.now()]")
        page.wait_for_timeout(1000 * args.seconds)
        end = page.evaluate("() => [document.getElementById('nd').vnca.steps(), performance.now()]")
        page_rate = (end[0] - start[0]) / ((end[1] - start[1]) / 1000)
        browser.close()
    httpd.shutdown()
    sizes = {p.name: p.stat().st_size for p in sorted(folder.glob("*.vncaweb"))}
    result = {
        "nondoubling_steps_per_second": statistics.median(timings["step"]),
        "doubling_growth_ms": statistics.median(timings["grow"]),
        "encode_ms": statistics.median(timings["encode"]),
        "page_steps_per_second_chart_on": page_rate,
        "implementation": "plain JavaScript (_static/vnca-live.js)",
        "page_weight_bytes": {**sizes, **{name: (ROOT / "_static" / name).stat().st_size
                                          for name in ("vnca-live.js", "vnca.css")}},
        "browser": timings["agent"],
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "repeats": args.repeats,
        "commit": _commit(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
