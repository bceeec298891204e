#!/usr/bin/env bash
# Table 1 reproduction queue: runs `eqprop fit` for each "<row>:<rule>:<seed>" given on the command
# line, one after the other, one thread each, into runs/table1/<row>-<rule>-s<seed>/. The rule is
# ep (the config as it is), bptt, or the name of any other override in configs/overrides
# (symmetric, random_sign, holomorphic2, cep, rbp, p1h_cross_entropy, ...), given after the config.
# A run with a last.ckpt there (or committed under checkpoints/table1/) is resumed exactly.
#   OMP_NUM_THREADS=1 benchmarks/table1_queue.sh p2h:ep:0 p1h:ep:1 p1h:symmetric:0 ...
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
for job in "$@"; do
  IFS=: read -r row alg seed extra <<<"$job"
  if [ -z "$row" ] || [ -z "$alg" ] || ! [[ "$seed" =~ ^[0-9]+$ ]] || [ -n "$extra" ]; then
    echo "$(date -Is) skip '$job': expected <row>:<rule>:<seed>, e.g. p1h:ep:0" >&2
    continue
  fi
  name="$row-$alg-s$seed"
  run="runs/table1/$name/version_0"
  args=(--config "configs/mnist/$row.yaml")
  # BPTT takes no beta: configs/overrides/bptt.yaml sets algorithm bptt and beta null
  [ "$alg" != ep ] && args+=(--config "configs/overrides/$alg.yaml")
  args+=(--seed_everything "$seed"
        --trainer.logger.init_args.save_dir runs/table1 --trainer.logger.init_args.name "$name"
        --trainer.logger.init_args.version version_0 --trainer.enable_progress_bar false)
  if [ ! -f "$run/checkpoints/last.ckpt" ] && [ -f "checkpoints/table1/$name/last.ckpt" ]; then
    mkdir -p "$run/checkpoints"
    cp "checkpoints/table1/$name/last.ckpt" "$run/checkpoints/"
    cp "checkpoints/table1/$name/config.yaml" "$run/"
    [ -f "checkpoints/table1/$name/results.json" ] && cp "checkpoints/table1/$name/results.json" "$run/"
  fi
  if [ -f "$run/checkpoints/last.ckpt" ]; then
    args+=(--ckpt_path "$run/checkpoints/last.ckpt")
  fi
  echo "$(date -Is) start $name ${args[*]}"
  eqprop fit "${args[@]}"
  rc=$?  # before $(date ...), which would reset it
  echo "$(date -Is) end $name rc=$rc"
done
