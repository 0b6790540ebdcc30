"""Paper 003 on Fashion-MNIST with cnn8: standard training, then adversarial fine-tuning, evaluated
with PGD-20 (eps 0.1, step 0.01) and a reduced `standard` suite (evidence against gradient masking).

Everything runs through the library: the fit loop with our objectives, robust_accuracy and
evaluate_robustness. CPU budgets force a shorter protocol than the paper's (see the printed
settings and docs/benchmarks.md); wall times are printed for every phase.

    python benchmarks/bench_attacks_repro.py --data-root ../shared/data --epochs 3 \
        --finetune fgsm_rs:1 --finetune pgd:1:150 --pgd-train-steps 5 --n-eval 1000 --n-suite 300
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from robustcompress.data import load_dataset
from robustcompress.evaluation.adversarial import evaluate_robustness, robust_accuracy
from robustcompress.evaluation.clean import accuracy
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit

EPS, STEPS, STEP = 0.1, 20, 0.01


def evaluate(model, test, n_eval: int, n_suite: int, suite_params: dict) -> dict:
    out = {"clean": accuracy(model, test)}
    start = time.perf_counter()
    out["pgd20"] = robust_accuracy(model, test, "pgd", EPS, n_examples=n_eval, steps=STEPS, step_size=STEP)
    out["pgd20_seconds"] = time.perf_counter() - start
    if n_suite:
        x, y = test.x[:n_suite], test.y[:n_suite]
        start = time.perf_counter()
        report = evaluate_robustness(
            model,
            x,
            y,
            "standard",
            EPS,
            steps=suite_params["steps"],
            attack_params={
                "apgd-t": {"targets": suite_params["targets"]},
                "square": {"queries": suite_params["queries"]},
            },
        )
        out["suite_seconds"] = time.perf_counter() - start
        out["pgd20_on_suite_images"] = robust_accuracy(model, (x, y), "pgd", EPS, steps=STEPS, step_size=STEP)
        out["suite"] = report.accuracy[EPS]
        out["worst"] = report.worst[EPS]
        out["flags"] = report.flags
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--epochs", type=int, default=3, help="standard training epochs (paper: 20)")
    ap.add_argument(
        "--finetune",
        action="append",
        default=[],
        help="objective:epochs[:batches per epoch], e.g. pgd:3 (repeatable)",
    )
    ap.add_argument(
        "--pgd-train-steps", type=int, default=10, help="PGD steps in pgd fine-tuning (paper: 20)"
    )
    ap.add_argument("--max-steps", type=int, default=None, help="cap on fine-tuning batches per epoch")
    ap.add_argument("--ft-lr", type=float, default=0.01, help="fine-tuning lr (paper, quantized: 0.01)")
    ap.add_argument(
        "--ft-schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="fine-tuning lr schedule (paper: constant)",
    )
    ap.add_argument("--save", default=None, help="folder to save the standard model checkpoint in")
    ap.add_argument("--load", default=None, help="start from this standard model checkpoint (skip training)")
    ap.add_argument(
        "--craft",
        choices=["eval", "train"],
        default="eval",
        help="mode adversarial examples are crafted in during fine-tuning (Madry/Wong: train)",
    )
    ap.add_argument(
        "--train-eps", type=float, default=EPS, help="eps of the fine-tuning attack (evaluation: 0.1)"
    )
    ap.add_argument("--save-tuned", default=None, help="folder to save each fine-tuned model in")
    ap.add_argument("--skip-standard-eval", action="store_true")
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--n-suite", type=int, default=500)
    ap.add_argument("--suite-steps", type=int, default=50)
    ap.add_argument("--suite-targets", type=int, default=3)
    ap.add_argument("--suite-queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = {"steps": args.suite_steps, "targets": args.suite_targets, "queries": args.suite_queries}
    print(json.dumps({"settings": vars(args)}), flush=True)

    splits = load_dataset("fashion-mnist", root=args.data_root, val_fraction=1 / 60, seed=0)
    if args.load:
        from robustcompress.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.load)
        row = {"model": f"loaded from {args.load}"}
    else:
        torch.manual_seed(0)
        model = ModelSpec.for_data("cnn8", splits.info).build()
        # paper 003: SGD without momentum, lr 0.1 for four epochs then 0.01
        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=128,
            lr=0.1,
            momentum=0.0,
            schedule="step",
            step_every=4,
            gamma=0.1,
            weight_decay=0.0,
        )
        start = time.perf_counter()
        fit(model, splits, cfg, device="cpu", seed=0, progress=False)
        row = {"model": f"standard ({args.epochs} ep)", "train_seconds": time.perf_counter() - start}
        if args.save:
            from robustcompress.checkpoint import save_checkpoint

            save_checkpoint(args.save, model, {"data": {"dataset": "fashion-mnist"}})
    if not args.skip_standard_eval:
        row.update(evaluate(model, splits.test, args.n_eval, args.n_suite, suite))
        print(json.dumps(row), flush=True)

    for recipe in args.finetune:
        name, epochs, cap = (recipe.split(":") + ["", ""])[:3]
        cap = int(cap) if cap else args.max_steps
        params = {"eps": args.train_eps, "craft": args.craft}
        if name == "pgd":
            params.update(steps=args.pgd_train_steps, step_size=2.5 * args.train_eps / args.pgd_train_steps)
        tuned = copy.deepcopy(model)
        ft = TrainConfig(
            epochs=int(epochs or 3),
            batch_size=128,
            lr=args.ft_lr,
            momentum=0.9,
            schedule=args.ft_schedule,
            weight_decay=0.0,
            objective=name,
            objective_params=params,
            max_steps_per_epoch=cap,
        )
        start = time.perf_counter()
        fit(tuned, splits, ft, device="cpu", seed=0, progress=False)
        row = {
            "model": f"T_ad {name} ({ft.epochs} ep" + (f", {cap} batches/ep)" if cap else ")"),
            "lr": f"{ft.lr} {ft.schedule}",
            "objective_params": params,
            "train_seconds": time.perf_counter() - start,
        }
        if args.save_tuned:
            from robustcompress.checkpoint import save_checkpoint

            folder = f"{args.save_tuned}/{name}-{ft.epochs}ep-{ft.schedule}-eps{args.train_eps:g}"
            save_checkpoint(folder, tuned, {"data": {"dataset": "fashion-mnist"}})
            row["saved"] = folder
        row.update(evaluate(tuned, splits.test, args.n_eval, args.n_suite, suite))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
