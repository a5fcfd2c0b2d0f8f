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
    units (1/cm); ``slice_thickness_cm`` for volumes."""

    image: Tensor
    pixel_size_cm: float
    name: str
    units: str = "1/cm"
    slice_thickness_cm: float | None = None

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
               field_of_view_cm: float | None = None, pixel_size_cm: float = 0.2) -> GroundTruth:
    """A ground-truth slice read from ``.npy``, ``.nii``/``.nii.gz`` or a DICOM CT file.

    The pixel size is ``field_of_view_cm / N`` when a field of view is given, else
    ``pixel_size_cm``.
    """
    from ..io.images import load_image

    image = load_image(path, slice_index=slice_index, units=units)
    square = _as_square(image, path)
    size = square.shape[-1]
    pixel = field_of_view_cm / size if field_of_view_cm else pixel_size_cm
    return GroundTruth(square, pixel, str(path))


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
