"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016): walk to the nearest linearised decision boundary.

Each step linearises the logits around the current point, moves to the closest boundary among the
`candidates` most likely classes (L2: distance |f_k| / ||w_k||_2; L-inf: |f_k| / ||w_k||_1) and
stops for an example once it is misclassified; the total step is scaled by 1 + overshoot. Like CW it
finds small perturbations; the base projects the result onto the eps-ball.
"""

from __future__ import annotations

import torch

from robustcompress.attacks.base import Attack, register_attack
from robustcompress.errors import ConfigError


@register_attack("deepfool")
class DeepFool(Attack):
    supports_targeted = False

    def __init__(
        self, model, eps, *, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, **kwargs
    ):
        super().__init__(model, eps, **kwargs)
        if steps < 1 or candidates < 2 or overshoot < 0:
            raise ConfigError("deepfool needs steps >= 1, candidates >= 2 and overshoot >= 0")
        self.steps, self.overshoot, self.candidates = steps, overshoot, candidates

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(x)
        k = min(self.candidates, logits.shape[1])
        classes = logits.topk(k, 1).indices  # the candidates, fixed at the clean point
        r_total = torch.zeros_like(x)
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.steps):
            x_adv = (x[active] + (1 + self.overshoot) * r_total[active]).clamp(0.0, 1.0)
            with torch.enable_grad(), self.estimator.context(self.model):
                xr = x_adv.requires_grad_(True)
                out = self.model(xr)
                still = out.argmax(1) == y[active]
                if not still.any():
                    break
                grads = []
                cand = torch.cat([y[active, None], classes[active]], 1)
                picked = out.gather(1, cand)
                for j in range(cand.shape[1]):
                    grads.append(
                        torch.autograd.grad(picked[:, j].sum(), xr, retain_graph=j < cand.shape[1] - 1)[0]
                    )
            g = torch.stack(grads, 1)  # (m, k+1, C, H, W)
            w = (g[:, 1:] - g[:, :1]).flatten(2)
            f = (picked[:, 1:] - picked[:, :1]).detach()
            same = cand[:, 1:] == y[active, None]
            dual = 1 if self.norm == "l2" else None
            w_norm = w.norm(p=2, dim=2) if dual else w.abs().sum(2)
            dist = f.abs() / (w_norm + 1e-8)
            dist[same] = float("inf")
            best = dist.argmin(1)
            idx = torch.arange(len(best), device=x.device)
            w_best = w[idx, best]
            scale = (f[idx, best].abs() + 1e-4) / (w_norm[idx, best] + 1e-8)
            if self.norm == "l2":
                step = scale[:, None] * w_best / (w_norm[idx, best, None] + 1e-8)
            else:
                step = scale[:, None] * w_best.sign()
            step = step.view_as(x_adv) * still.view(-1, 1, 1, 1)
            r_total[active] = r_total[active] + step
            active = active[still]
        return (x + (1 + self.overshoot) * r_total).clamp(0.0, 1.0)
