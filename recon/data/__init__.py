"""Ground truths for simulated runs: CT phantoms and volumes, user image files, MRI slices and fastMRI files."""
