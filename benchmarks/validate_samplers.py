"""Samplers against exact Gaussian-mixture posteriors (issue 5's validation table).

    python benchmarks/validate_samplers.py [--draws 1000]

Cases: 4-mode Gaussian mixtures on R^2 and R^64, observed through an inpainting-like operator
(the first half of the coordinates) or a random Gaussian matrix (half as many rows as
dimensions), white noise 0.1 (``recon.samplers.validation.gmm_case``). Scores per
``recon.samplers.validation.score_draws``: relative error of the posterior mean and sliced
2-Wasserstein distance to exact posterior draws, with the Monte-Carlo floor (exact vs exact)
and two failures for scale: ``no data`` (DDS with gamma = 0: prior draws) and ``flat prior``
(DDS on N(0, 100 I) instead of the mixture). Prints Markdown.
"""

from __future__ import annotations

import argparse
import time

import torch

from priors import GaussianPrior
from recon.samplers import DDS, DPS, REDDiff
from recon.samplers.validation import draw, gmm_case, score_draws

SAMPLERS = {
    "DDS-50": lambda case: DDS(case.prior),
    "DPS-200": lambda case: DPS(case.prior, steps=200),
    "DPS-1000": lambda case: DPS(case.prior, steps=1000),
    "RED-Diff-50": lambda case: REDDiff(case.prior, sigma=case.sigma),
    "RED-Diff-200": lambda case: REDDiff(case.prior, steps=200, sigma=case.sigma),
    "no data (DDS, gamma 0)": lambda case: DDS(case.prior, gamma=0.0),
    "flat prior (DDS, N(0, 100 I))": lambda case: DDS(GaussianPrior(torch.zeros(case.prior.shape[1]),
                                                                    100 * torch.eye(case.prior.shape[1]))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.draws} draws per sampler; {time.strftime('%Y-%m-%d')}\n")
    print("| case | sampler | mean error | SW | SW floor (exact) | SW prior | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for dim in (2, 64):
        for operator in ("inpainting", "random"):
            case = gmm_case(dim, operator)
            for name, make in SAMPLERS.items():
                start = time.perf_counter()
                x = draw(make(case), case, args.draws)
                seconds = time.perf_counter() - start
                s = score_draws(case, x)
                print(f"| {case.name} | {name} | {s['mean_error']:.3f} | {s['sw']:.3f} | {s['sw_floor']:.3f} | "
                      f"{s['sw_prior']:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
