"""Reading and writing files: images (npy, NIfTI, DICOM), fastMRI HDF5, and atomic writes."""
