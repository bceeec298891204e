"""How a rule's estimate drifts from the BPTT gradient along its own training trajectory.

Trains the config (with its rule, learning rates and seed, plain SGD, no Lightning loop) for
``--batches`` training batches; every ``--every`` batches, before that batch's update, it
computes on the same weights and batch the rule's estimate and truncated BPTT's gradient (the
config's ``T`` and ``K``) and records, per weight layer, their cosine and norm ratio, the layer's
weight norm, the free phase's last-step change and the batch error. This is how the
cross-entropy P-1h failure was traced (README, "P-1h by learning rule"). A config that trains
otherwise (``optimizer: adam``, a ``cosine_t_max`` schedule, continual EP's per-step updates) is
refused rather than trained differently, and so are options it would not use (``--trainer.*``).

    python benchmarks/drift.py --config configs/mnist/p1h.yaml \\
        --config configs/overrides/p1h_cross_entropy.yaml --batches 400 --every 50 --out d.json
"""

from __future__ import annotations

import argparse

import torch
from common import eqprop_cli, meta_start, out_file, positive_int, run_meta, write_json
from torch.nn import functional as F

from eqprop_lightning.commands import user_error
from eqprop_lightning.learning import make_rule

#: the config options drift.py uses: the net, rule and learning rates, the data, the seed
HONOURED = ("--model", "--data", "--seed_everything")


def honoured(option: str) -> bool:
    """``--model``, ``--data`` and ``--seed_everything``, alone, ``=value`` or ``.key``."""
    name = option.split("=", 1)[0]
    return any(name == h or name.startswith(f"{h}.") for h in HONOURED)


def gradients(rule, net, x, y, step: int) -> tuple[list[torch.Tensor], object]:
    estimate = rule(net, x, y, step)
    weights = [group.weight for group in net.synapse_groups()]
    return list(torch.autograd.grad(estimate.objective, weights)), estimate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--batches", type=positive_int, default=400, help="training batches (>= 1)")
    p.add_argument("--every", type=positive_int, default=50, help="batches between rows (>= 1)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (>= 1)")
    p.add_argument("--out", type=out_file, required=True)
    args, overrides = p.parse_known_args()
    start = meta_start()
    ignored = [a for a in overrides if a.startswith("--") and not honoured(a)]
    if ignored:
        p.error(
            f"argument {ignored[0]}: drift.py builds only the model and data (it runs no Trainer); "
            "it takes --model, --data (and their .keys) and --seed_everything"
        )
    torch.set_num_threads(args.threads)
    configs = [a for c in args.config for a in ("--config", c)]
    try:
        cli = eqprop_cli(*configs, *overrides)
    except Exception as err:  # a missing config, a bad value, missing data: one line, status 2
        cause = user_error(err)
        if cause is None:
            raise
        p.error(" ".join(str(cause).split()))
    model, data = cli.model, cli.datamodule
    hp = model.hparams
    if hp.optimizer != "sgd":
        p.error(f"model.optimizer={hp.optimizer!r}: drift.py trains with plain SGD only (sgd)")
    if hp.cosine_t_max is not None:
        p.error(f"model.cosine_t_max={hp.cosine_t_max}: drift.py has no schedule (give null)")
    if model.rule.continual:
        p.error(f"model.algorithm={hp.algorithm!r}: continual EP has no estimate at fixed weights")
    data.prepare_data()
    data.setup("fit")
    net, rule = model.net, model.rule
    bptt = make_rule("bptt", hp.T, hp.K)
    groups = net.synapse_groups()
    labels = net.synapse_labels()  # every net has them (nets.protocol.Net)
    lrs = zip(groups, hp.lrs, strict=True)
    sgd = torch.optim.SGD([{"params": g.parameters(), "lr": lr} for g, lr in lrs])
    rows = []
    for i, (x, y) in enumerate(data.train_dataloader()):
        if i >= args.batches:
            break
        if i % args.every == 0:
            g_rule, est = gradients(rule, net, x, y, i)
            g_bptt, _ = gradients(bptt, net, x, y, i)
            row = {
                "batch": i,
                "free_change": est.last_change.max().item(),
                "error": 100 * (est.output.argmax(1) != y.argmax(1)).float().mean().item(),
            }
            for name, group, a, b in zip(labels, groups, g_rule, g_bptt, strict=True):
                row[name] = {
                    "cosine": F.cosine_similarity(a.flatten(), b.flatten(), 0).item(),
                    "norm_ratio": (a.norm() / b.norm()).item(),
                    "weight_norm": group.weight.norm().item(),
                }
            rows.append(row)
            layers = ", ".join(
                f"{n} cos {row[n]['cosine']:.2f} ratio {row[n]['norm_ratio']:.3g} "
                f"|W| {row[n]['weight_norm']:.1f}"
                for n in labels
            )
            change, error = row["free_change"], row["error"]
            print(f"batch {i}: change {change:.1e} error {error:.0f} % | {layers}")
        estimate = rule(net, x, y, i)
        sgd.zero_grad()
        estimate.objective.backward()
        sgd.step()
    meta = run_meta(start, clock="wall", device="cpu", threads=args.threads)
    meta |= {"batches": args.batches, "every": args.every, "overrides": overrides}
    write_json(args.out, {"configs": args.config, "rows": rows, "meta": meta})


if __name__ == "__main__":
    main()
