"""Training runs for issue 33's experiments: a laptop recipe with the changes under test, each
a flag, trained by `vnca.train.fit` (checkpoints, resume, metrics as usual). What the package
does not have yet is patched in here, and moves into the chapters once a run justifies it:

- --schedule cosine: the learning rate decays from --lr to --lr * --final-lr by a cosine;
- --pool-fresh N: only N rows of every 8 start from a seed, the rest continue pool states
  (the recipe's pool: 4 of 8), damage every 4th row as before; the pool is shuffled whole;
- --pool-kl detached: a pool row's KL term sends no gradient to the encoder (its
  reconstruction term sends none: its state was grown from an earlier z);
- --warm NAME|RUN: start from a shipped model's or a run's weights (the decoder and encoder);
- --seed-probability P: rows start from a seed at random with probability P, the rest
  continue pool entries (every 4th damaged): long-lived entries without a fixed pattern;
- --rest-penalty L: the loss adds L times the squared update at the final grid;
- --seed-write Q: a seed row's result enters the pool with probability Q only;
- --clip-hidden C: every NCA step clips the hidden channels to +-C (the model changes: at test too);
- --pool-noise S: Gaussian noise of std S on every state taken from the pool;
- --leak L: every NCA step s + m * f(s) - L * s, at training and at test;
- --worst-out: the batch's worst pool row is replaced by the seed row's grown state;
- --contract W: the loss adds W (relu(g - 1))^2, g the growth of a small random difference of each
  row's final grid over --contract-steps more steps;
- --extend L: each row's grid grown L steps past its T, the gradient through them; its
  log-likelihood the mean of the one at T and at T + L; the later grid goes back to the pool;
- --widen: with --warm and a larger --hidden, the warm rule's weights fill the leading corner of
  the wider one and its new units start with zero output weights (the same function at step 0).

    python run.py nondoubling --out runs/x --steps 4000 --warm nondoubling-laptop --pool-fresh 1
"""
import argparse
import dataclasses
from pathlib import Path

import json

import patches
from vnca.recipes import train_config
from vnca.train import fit

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, required=True)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
p.add_argument("--final-lr", type=float, default=0.01, help="fraction of --lr at the end")
p.add_argument("--pool-fresh", type=int, default=4)
p.add_argument("--warm", default="")
p.add_argument("--pool-kl", choices=("paper", "detached"), default="paper",
               help="detached: a pool row's KL term has no gradient to the encoder, as its "
               "reconstruction term has none")
p.add_argument("--hidden", type=int)
p.add_argument("--residual-blocks", type=int, help="the doubling rule's residual blocks (paper: 4)")
p.add_argument("--update-probability", type=float,
               help="the non-doubling rule's per-cell update probability (the original's damage "
               "checkpoint: 0.5)")
p.add_argument("--t-range", type=int, nargs=3, metavar=("MIN", "MAX", "TEST"),
               help="the non-doubling model's training range of T and its test T")
p.add_argument("--clip-hidden", type=float,
               help="clip the hidden channels (1 on) to +-this after every NCA step, at training "
               "and at test: a bound at every step of a long run, not only on training's final grids")
p.add_argument("--seed-probability", type=float,
               help="every row continues a pool entry but for this random share, which starts from "
               "a seed (pool entries live 1/this visits on average; the patterns: 1/2 or 1/8)")
p.add_argument("--rest-penalty", type=float,
               help="subtract this times the squared update the rule proposes at each row's final "
               "grid from its ELBO (a grown digit at rest)")
p.add_argument("--seed-write", type=float,
               help="a seed row's grown state replaces its pool slot's entry only with this "
               "probability: longer-lived entries with as many rows grown from seeds")
p.add_argument("--clip-logits", type=float,
               help="with --clip-hidden: also clip channel 0, the logits, to +-this")
p.add_argument("--pool-noise", type=float,
               help="add Gaussian noise of this std to every state taken from the pool (all channels)")
p.add_argument("--leak", type=float,
               help="every NCA step s + m * f(s) - leak * s: a decay of every cell towards zero "
                    "that the rule must make up for on the digit, and that damps every mode it "
                    "never learnt, at training and at test")
p.add_argument("--worst-out", action="store_true",
               help="each step, the batch's worst pool row (lowest log p) is replaced by the seed "
                    "row's grown state (Growing NCA's pool); with --seed-write, entries live on "
                    "while they stay good")
p.add_argument("--contract", type=float,
               help="subtract this times (relu(g - 1))^2 from each row's ELBO, g the growth of a small "
                    "random difference of its final grid over --contract-steps more steps")
p.add_argument("--contract-steps", type=int, default=32)
p.add_argument("--extend", type=int,
               help="grow each row's grid this many steps past its T, the gradient through them, "
                    "its log-likelihood the mean of the two; the later grid goes back to the pool")
p.add_argument("--widen", action="store_true",
               help="with --warm and a larger --hidden: the warm weights fill the wider rule's "
                    "leading corner; the new hidden units' output weights start at zero")
p.add_argument("--batch", type=int)
p.add_argument("--resume", action="store_true")
p.add_argument("--set", nargs="*", default=[], help="TrainConfig field=value (int/float/str)")
a = p.parse_args()

overrides = {"steps": a.steps, "learning_rate": a.lr}
if a.batch:
    overrides["batch_size"] = a.batch
for item in a.set:
    k, v = item.split("=")
    for cast in (int, float, str):
        try:
            overrides[k] = cast(v)
            break
        except ValueError:
            pass
config = train_config(a.model, "laptop", **overrides)
model_changes = {}
if a.hidden:
    model_changes["hidden"] = a.hidden
if a.residual_blocks:
    model_changes["residual_blocks"] = a.residual_blocks
if a.update_probability is not None:
    model_changes["update_probability"] = a.update_probability
if a.t_range:
    model_changes.update(zip(("min_steps", "max_steps", "test_steps"), a.t_range))
if model_changes:
    config = dataclasses.replace(
        config, model_config=dataclasses.replace(config.model_config, **model_changes))

patches.apply(a, config.steps)
print(config, flush=True)
fit(config, a.out, resume=a.resume, progress=False)
# after the run: a fresh run refuses a folder that holds files not its own
(Path(a.out) / "claims-args.json").write_text(json.dumps(vars(a), indent=1))
