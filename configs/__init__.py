"""The Hydra configs, installed as the package ``recon.configs`` (found through Hydra's package search path)."""
