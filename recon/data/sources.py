"""Ground-truth sources for simulated runs: bundled phantoms or a user's image file.

A data source (the ``data`` config node) returns an object with ``image`` (the truth,
``(1, 1, H, W)``), ``name``, ``units``, ``pixel_size_cm`` and three methods that let
``recon.engine.simulate`` stay modality-agnostic: ``to(device)``, ``operator_inputs(factory)`` (the
keyword arguments the ``operator`` factory takes from the data: :func:`accepted_inputs`) and
``measure(physics, noise, generator)`` (the measurement ``y``). :class:`GroundTruth` is the CT
one; MRI sources are in :mod:`recon.data.mri_sources`.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, InputError


def accepted_inputs(inputs: Mapping[str, Any], factory: Callable[..., Any] | None) -> dict[str, Any]:
    """The entries of ``inputs`` that ``factory`` takes by keyword: a source offers what it has
    (image size, pixel size, ...) and each operator factory gets only the arguments it declares,
    so no factory needs a parameter it does not use. All of ``inputs`` when ``factory`` is None
    or takes ``**kwargs``. ``factory`` may be a ``functools.partial`` (hydra's ``_partial_``)."""
    if factory is None:
        return dict(inputs)
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(inputs)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {key: value for key, value in inputs.items() if key in names}


@dataclass
class GroundTruth:
    """A ground-truth image ``(1, 1, N, N)`` or volume ``(1, 1, D, N, N)`` float32 in attenuation
    units (1/cm) on square pixels of ``pixel_size_cm``; ``slice_thickness_cm`` (the distance
    between slices) for volumes; ``dicom``, the source's
    :class:`~recon.io.dicom_read.DicomGeometry` when it was DICOM (a derived series is written
    back on it), else None."""

    image: Tensor
    pixel_size_cm: float
    name: str
    units: str = "1/cm"
    slice_thickness_cm: float | None = None
    dicom: Any = None

    def to(self, device: torch.device) -> "GroundTruth":
        return replace(self, image=self.image.to(device))

    def operator_inputs(self, factory: Callable[..., Any] | None = None) -> dict[str, Any]:
        """``image_size`` (pixels), ``pixel_size`` (cm) and, for a volume, ``depth`` (slices):
        those of them that ``factory`` takes (:func:`accepted_inputs`; all without one)."""
        inputs: dict[str, Any] = {"image_size": self.image.shape[-1], "pixel_size": self.pixel_size_cm}
        if self.image.dim() == 5:
            inputs["depth"] = self.image.shape[2]
        return accepted_inputs(inputs, factory)

    def measure(self, physics: torch.nn.Module, noise: Any, generator: torch.Generator) -> Tensor:
        """``noise(physics(image))``."""
        return noise(physics(self.image), generator=generator)


def phantom(kind: str = "mixed", split: str = "test", index: int = 0, size: int = 128,
            field_of_view_cm: float | None = None) -> GroundTruth:
    """A seeded CT phantom from :mod:`recon.data.phantoms` (held out when ``split="test"``).

    The field of view defaults to the phantom's own (25 cm head, 40 cm body).
    """
    from .phantoms import field_of_view_cm as phantom_fov
    from .phantoms import make_phantom

    try:
        image = make_phantom(kind, split, index, size)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from None
    fov = field_of_view_cm or phantom_fov(kind, index)
    return GroundTruth(_as_square(image, f"phantom {kind}"), fov / size, f"{kind}-{split}-{index}")


def image_file(path: str, slice_index: int | None = None, units: str = "attenuation",
               field_of_view_cm: float | None = None, pixel_size_cm: float | None = None) -> GroundTruth:
    """A ground-truth slice read from ``.npy``, ``.nii``/``.nii.gz``, a DICOM CT file or a folder
    holding one DICOM CT series (slice ``slice_index``, default the middle one).

    The pixel size is the file's (DICOM PixelSpacing, NIfTI zooms) unless ``field_of_view_cm``
    (over the padded square's ``N`` pixels) or ``pixel_size_cm`` is given, which override it
    (with a warning when they differ from the file's by more than 1 %). A file that records no
    pixel size (``.npy``) needs one of them; non-square pixels are refused.
    """
    from ..io.images import read_slice

    scan = read_slice(path, slice_index=slice_index, units=units)
    square = _as_square(scan.image, path)
    given = None if field_of_view_cm is None else _positive("data.field_of_view_cm", field_of_view_cm) / square.shape[-1]
    pixel = chosen_size_cm(path, "pixel size", "data.pixel_size_cm=CM (or data.field_of_view_cm=CM)",
                           given if given is not None else pixel_size_cm, square_pixel_cm(path, scan.spacing_mm))
    return GroundTruth(square, pixel, str(path), dicom=scan.dicom)


def square_pixel_cm(path: object, spacing_mm: tuple[float, float] | None) -> float | None:
    """The side in cm of a file's square pixels, ``spacing_mm`` ``(row, column)``; None when the
    file records none; :class:`InputError` for non-square pixels (resample them first)."""
    if spacing_mm is None:
        return None
    row, col = spacing_mm
    if abs(row - col) > 1e-3 * max(row, col):
        raise InputError(path, f"non-square pixels ({row:g} mm between rows, {col:g} mm between columns); "
                               "resample to square pixels first, e.g. to a .npy given data.pixel_size_cm")
    return (row + col) / 20.0


def chosen_size_cm(path: object, what: str, hint: str, given: float | None, from_file: float | None) -> float:
    """``given`` (a config value, cm) when set, warning when it differs from the file's by more
    than 1 %; else the file's; :class:`InputError` when neither exists, saying how to give it."""
    if given is not None:
        given = _positive(hint.split("=")[0], given)
        if from_file is not None and abs(given / from_file - 1.0) > 0.01:
            warnings.warn(f"{path}: the given {what} {given:g} cm overrides the file's {from_file:g} cm "
                          f"({100 * (given / from_file - 1):+.0f} %)", UserWarning, stacklevel=3)
        return given
    if from_file is None:
        raise InputError(path, f"the file records no {what}; give it with {hint}")
    return float(from_file)


def _positive(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a positive number of cm, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{key} must be a positive number of cm, got {value!r}")
    return number


def _as_square(image: np.ndarray, source: str) -> Tensor:
    """Zero-pad (air) a 2D image to a centred square ``(1, 1, N, N)`` tensor."""
    if image.ndim != 2:
        raise InputError(source, f"expected a 2D image, got shape {image.shape}")
    h, w = image.shape
    n = max(h, w)
    out = np.zeros((n, n), dtype=np.float32)
    top, left = (n - h) // 2, (n - w) // 2
    out[top : top + h, left : left + w] = image
    return torch.from_numpy(out)[None, None]
