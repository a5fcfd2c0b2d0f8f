"""recon's DPS against deepinv's DPS on the same network, operator and data (one run).

    pip install deepinv            # optional, benchmark only (needs a torchvision that imports)
    python benchmarks/deepinv_compare.py [--steps 200] [--count 2] [--weights 1.0 0.3]

The bundled CT prior's network is wrapped as a deepinv ``Denoiser`` (deepinv passes the
variance-exploding input ``x0 + sigma n`` and ``sigma``; the wrapper evaluates the network at
the VP training step whose ``abar = 1 / (1 + sigma^2)`` is nearest, in the prior's model space
[-1, 1], where deepinv's DPS clips its estimates), the CT operator as a deepinv ``Physics``
acting on model-space images. deepinv's default DPS (VP SDE with beta 0.1..20, i.e. the same
linear 1e-4..0.02 schedule; DDPM solver; plain-norm guidance) runs at each ``--weights`` value;
recon's DPS at the same number of steps with ``zeta = 3`` (chosen for CT, samplers=dps_ct).
Held-out phantoms, 16 views, Poisson noise at 1e5 photons. Prints a Markdown table and the
ratios of time per step and PSNR (recon / deepinv, best deepinv weight).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from operators import TransmissionNoise, parallel_beam_ct
from priors import load_prior
from recon.measure import machine_description
from recon.data.sources import phantom
from recon.metrics import psnr
from recon.samplers import DPS


def deepinv_denoiser(prior):
    """The prior as a deepinv Denoiser ``D(x, sigma)`` on model-space images."""
    from deepinv.models import Denoiser

    table = prior.schedule.train_alphas_cumprod

    class PriorDenoiser(Denoiser):
        def forward(self, x, sigma, *args, **kwargs):
            sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
            abar = 1.0 / (1.0 + sigma**2)
            t = (table[None, :] - abar[:, None]).abs().argmin(dim=1).expand(x.shape[0])
            z_t = abar.sqrt().to(x.dtype).reshape(-1, 1, 1, 1) * x
            return prior.x0(z_t.float(), t).to(x.dtype)

    return PriorDenoiser()


def main() -> None:
    import deepinv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--count", type=int, default=2, help="held-out phantoms")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0])
    args = parser.parse_args()
    device = torch.device("cpu")
    prior = load_prior("ct-phantom-128")
    rows: dict[str, list[tuple[float, float]]] = {}
    for index in range(args.count):
        truth = phantom(split="test", index=index)
        op = parallel_beam_ct(128, views=16, pixel_size=truth.pixel_size_cm)
        y = TransmissionNoise(1e5)(op(truth.image), generator=torch.Generator().manual_seed(index))
        start = time.perf_counter()
        x = DPS(prior, steps=args.steps, zeta=3.0)(y, op, generator=torch.Generator().manual_seed(index))
        rows.setdefault("recon DPS (zeta 3)", []).append((psnr(x, truth.image), time.perf_counter() - start))
        physics = deepinv.physics.Physics(A=lambda z: op(prior.decode(z)))
        for weight in args.weights:
            sampler = deepinv.sampling.DPS(deepinv_denoiser(prior), num_steps=args.steps, weight=weight,
                                           device=device, dtype=torch.float32, rng=torch.Generator())
            start = time.perf_counter()
            z = sampler(y, physics, x_init=(1, 1, 128, 128), seed=index)
            rows.setdefault(f"deepinv DPS (weight {weight:g})", []).append(
                (psnr(prior.decode(z), truth.image), time.perf_counter() - start))
    print(f"{machine_description(device)}, deepinv {deepinv.__version__}; {args.steps} steps, {args.count} "
          f"held-out phantoms, 16 views\n")
    print("| implementation | PSNR [dB] | seconds / step |")
    print("| --- | --- | --- |")
    summary = {}
    for name, values in rows.items():
        summary[name] = (statistics.mean(v[0] for v in values), statistics.mean(v[1] for v in values) / args.steps)
        print(f"| {name} | {summary[name][0]:.2f} | {summary[name][1]:.4f} |")
    ours = summary.pop("recon DPS (zeta 3)")
    best = max(summary.items(), key=lambda kv: kv[1][0])
    print(f"\nrecon / deepinv ({best[0]}): time per step x{ours[1] / best[1][1]:.2f}, "
          f"PSNR {ours[0] - best[1][0]:+.2f} dB")


if __name__ == "__main__":
    main()
