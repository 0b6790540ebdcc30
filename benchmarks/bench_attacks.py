"""PGD-20 throughput: our attack against a hand-written minimal PyTorch PGD loop, torchattacks and
the adversarial-robustness-toolbox (ART), on the same model, batches and images, in one process,
with the robust accuracy each gives; then the `standard` suite's cost in PGD-20 equivalents.

torchattacks and ART are optional (benchmark-only, not project dependencies):
    pip install --no-deps torchattacks; pip install adversarial-robustness-toolbox
    python benchmarks/bench_attacks.py --data-root ../shared/data --n 1024 --batch 256 --rounds 3

Methods are interleaved round by round and each keeps its fastest round, so load from other
processes hits them alike. The model is a cnn8 trained for one epoch on 10,000 Fashion-MNIST images
(or --checkpoint).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from robustcompress.attacks import make_attack
from robustcompress.data import load_dataset
from robustcompress.evaluation.adversarial import evaluate_robustness
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit


def plain_pgd(model, x, y, eps, alpha, steps, generator):
    """The minimal PGD loop a user would write by hand (random start, sign steps, clip)."""
    x_adv = (x + (2 * torch.rand(x.shape, generator=generator) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def batches(x, y, size):
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


def run_ours(model, x, y, a):
    correct = 0
    atk = make_attack("pgd", model, a.eps, steps=a.steps, step_size=a.step, seed=0)
    for xb, yb in batches(x, y, a.batch):
        _, pred = atk.perturb(xb, yb)
        correct += int((pred == yb).sum())
    return correct


def run_ours_all(model, x, y, a):
    """Ours without skipping misclassified images (every image attacked, as the others do)."""
    correct = 0
    atk = make_attack("pgd", model, a.eps, steps=a.steps, step_size=a.step, seed=0)
    for xb, yb in batches(x, y, a.batch):
        x_adv = atk.generate(xb, yb)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct


def run_plain(model, x, y, a):
    g = torch.Generator().manual_seed(0)
    correct = 0
    for xb, yb in batches(x, y, a.batch):
        x_adv = plain_pgd(model, xb, yb, a.eps, a.step, a.steps, g)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct


def make_torchattacks(model, a):
    import torchattacks

    atk = torchattacks.PGD(model, eps=a.eps, alpha=a.step, steps=a.steps, random_start=True)

    def run(model, x, y, a):
        correct = 0
        for xb, yb in batches(x, y, a.batch):
            x_adv = atk(xb, yb)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb).sum())
        return correct

    return run


def make_art(model, a, shape):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    atk = ProjectedGradientDescentPyTorch(
        clf, norm=np.inf, eps=a.eps, eps_step=a.step, max_iter=a.steps, batch_size=a.batch, verbose=False
    )

    def run(model, x, y, a):
        x_adv = atk.generate(x.numpy(), y.numpy())
        with torch.no_grad():
            pred = model(torch.from_numpy(x_adv)).argmax(1)
        return int((pred == y).sum())

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--suite-n", type=int, default=256, help="images for the standard-suite cost (0: skip)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    splits = load_dataset("fashion-mnist", root=a.data_root, limit_train=10000, limit_test=a.n, seed=0)
    if a.checkpoint:
        from robustcompress.checkpoint import load_checkpoint

        model, _ = load_checkpoint(a.checkpoint)
    else:
        torch.manual_seed(0)
        model = ModelSpec.for_data("cnn8", splits.info).build()
        fit(
            model,
            splits,
            TrainConfig(epochs=1, batch_size=128, lr=0.05),
            device="cpu",
            seed=0,
            progress=False,
        )
    model.eval()
    x, y = splits.test.x[: a.n], splits.test.y[: a.n]
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    methods = {
        "plain loop": run_plain,
        "robustcompress": run_ours,
        "robustcompress (attack all)": run_ours_all,
    }
    for label, factory in (
        ("torchattacks", lambda: make_torchattacks(model, a)),
        ("ART", lambda: make_art(model, a, tuple(x.shape[1:]))),
    ):
        try:
            methods[label] = factory()
        except ImportError as exc:
            print(f"{label}: not installed ({exc})")
    best = {k: float("inf") for k in methods}
    acc = {}
    for _ in range(a.rounds):
        for label, fn in methods.items():
            start = time.perf_counter()
            acc[label] = fn(model, x, y, a) / len(x)
            best[label] = min(best[label], time.perf_counter() - start)
    print(
        f"cnn8, {len(x)} Fashion-MNIST test images, batch {a.batch}, "
        f"PGD-{a.steps} eps {a.eps} step {a.step}, "
        f"clean accuracy {clean:.4f}, torch threads {torch.get_num_threads()}, best of {a.rounds} rounds"
    )
    print("| method | images/s | vs plain loop | robust accuracy |\n|---|---|---|---|")
    base = len(x) / best["plain loop"]
    for label in methods:
        ips = len(x) / best[label]
        print(f"| {label} | {ips:.0f} | {ips / base:.2f}x | {100 * acc[label]:.2f}% |")

    if a.suite_n:
        xs, ys = x[: a.suite_n], y[: a.suite_n]
        start = time.perf_counter()
        run_ours(model, xs, ys, argparse.Namespace(**{**vars(a), "batch": a.batch}))
        pgd_time = time.perf_counter() - start
        start = time.perf_counter()
        report = evaluate_robustness(model, xs, ys, "standard", a.eps, batch_size=a.batch, sanity=False)
        suite_time = time.perf_counter() - start
        start = time.perf_counter()
        evaluate_robustness(model, xs, ys, "standard", a.eps, batch_size=a.batch, sanity=True)
        with_sanity = time.perf_counter() - start
        print(
            "\nstandard suite (AutoAttack settings: APGD-CE 100, APGD-T 9x100, Square 5000), "
            f"{len(xs)} images:"
        )
        print(f"| run | seconds | PGD-{a.steps} equivalents | worst-case accuracy |\n|---|---|---|---|")
        print(f"| PGD-{a.steps} | {pgd_time:.1f} | 1.0 | |")
        print(
            f"| standard suite | {suite_time:.1f} | {suite_time / pgd_time:.1f} | "
            f"{100 * report.worst[a.eps]:.2f}% |"
        )
        print(f"| standard + sanity checks | {with_sanity:.1f} | {with_sanity / pgd_time:.1f} | |")
        print("per attack (cascade):", {k: round(v, 4) for k, v in report.accuracy[a.eps].items()})


if __name__ == "__main__":
    main()
