"""recon: reconstruction algorithms (samplers, baselines), metrics, I/O and the application."""
