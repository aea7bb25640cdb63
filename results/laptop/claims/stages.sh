#!/bin/bash
# Entry 25: run 20's model continued in four stages of 2,000 steps, each from the one before, pool
# entries living longer at each (a seed row's grown state replaces its slot's entry with probability
# 1/2, 1/4, 1/8, 1/16); then measure.py on the second and the fourth. From the repository's root:
#   VNCA_DATA_DIR=... bash results/laptop/claims/stages.sh
set -euo pipefail
export PYTHONPATH=results/laptop/claims
prev=runs/nd-p05-long
for q in 2 4 8 16; do
  out=runs/nd-p05-age$q
  .venv/bin/python results/laptop/claims/run.py nondoubling --out $out --steps 2000 --lr 3e-4 \
    --schedule cosine --warm $prev --update-probability 0.5 --t-range 56 80 64 \
    --seed-write "$(python3 -c "print(1/$q)")" \
    --set encoder_from= decoder_first=0 kl_warmup=0 detach_pool_kl=1 pool_pattern=SPPDPPPD > $out.log 2>&1
  prev=$out
done
for q in 4 16; do
  .venv/bin/python results/laptop/claims/measure.py runs/nd-p05-age$q \
    --json results/laptop/claims/nd-p05-age$q-claims.json > runs/nd-p05-age$q-measure.log 2>&1
done
