"""Samplers against exact Gaussian-mixture posteriors, and the wrong answers each test must reject.

    python benchmarks/validate_samplers.py [--draws 1000] [--cases 2-random 64-ambiguous ...] [--samplers DAPS PnP-DM ...]

Cases (``recon.samplers.validation.gmm_case``): 4-mode Gaussian mixtures on R^2 and R^64,
observed through an inpainting-like operator (the first half of the coordinates), a random
Gaussian matrix (half as many rows as dimensions), or ``ambiguous`` inpainting (the modes agree on
the observed half, so the posterior keeps every mode); white noise 0.1. Scores per
``recon.samplers.validation.score_draws``: relative error of the posterior mean and sliced
2-Wasserstein distance to exact posterior draws, with the Monte-Carlo floor (exact vs exact).
Rows in italics are deliberately wrong answers (``wrong_posteriors``: a Gaussian with the
posterior's moments, the posterior for 3x the noise, the posterior mean repeated, the prior)
and two wrong samplers (DDS ignoring the data; DDS on a flat prior). Prints Markdown.
"""

from __future__ import annotations

import argparse
import time

import torch

from priors import GaussianPrior
from recon.samplers import DDS
from recon.samplers.validation import VALIDATED, draw, gmm_case, score_draws, wrong_posteriors

CASES = ["2-inpainting", "2-random", "64-inpainting", "64-random", "64-ambiguous"]
SAMPLERS = {
    **VALIDATED,
    "_no data (DDS, gamma 0)_": lambda case: DDS(case.prior, gamma=0.0),
    "_flat prior (DDS, N(0, 100 I))_": lambda case: DDS(GaussianPrior(torch.zeros(case.prior.shape[1]),
                                                                      100 * torch.eye(case.prior.shape[1]))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--cases", nargs="+", default=CASES, help="DIM-OPERATOR")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.draws} draws per sampler; {time.strftime('%Y-%m-%d')}\n")
    print("| case | sampler | mean error | SW | SW floor (exact) | SW prior | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.cases:
        dim, operator = spec.split("-", 1)
        case = gmm_case(int(dim), operator)
        rows = {name: (lambda make=SAMPLERS[name]: draw(make(case), case, args.draws)) for name in args.samplers}
        wrong = wrong_posteriors(case, args.draws)
        rows.update({f"_{name}_": (lambda x=x: x) for name, x in wrong.items()})
        for name, make in rows.items():
            start = time.perf_counter()
            x = make()
            seconds = time.perf_counter() - start
            s = score_draws(case, x)
            print(f"| {case.name} | {name} | {s['mean_error']:.3f} | {s['sw']:.3f} | {s['sw_floor']:.3f} | "
                  f"{s['sw_prior']:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
