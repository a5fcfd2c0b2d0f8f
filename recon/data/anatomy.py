"""Anatomical CT head phantoms from the MNI152 template's tissue maps: 2D slices and isotropic volumes, 1/cm.

The brain comes from the ICBM 2009a symmetric MNI152 template that nilearn ships (1 mm; T1,
grey- and white-matter probability maps): grey matter, white matter and CSF (brain minus
both: ventricles, sulci, cisterns) keep the template's partial volumes, sharpened by a random
factor so that a phantom is crisper than the 152-subject average. Around it, shells of the
signed distance to the brain surface make the subarachnoid CSF, the skull (inner table,
diploe, outer table, of smoothly varying thickness) and the scalp (muscle and subcutaneous
fat); procedural frontal sinuses, mastoid air cells, pineal and choroid-plexus
calcifications and 0-2 lesions (haemorrhage or infarct) are added. Each tissue's HU is drawn
per phantom, with a fine texture. Edges are partial-volumed analytically (a one-pixel ramp on
the signed distance), so no supersampling is needed.

Every phantom is a random pose (rotation, translation, per-axis scale) and a random smooth
deformation of the template, seeded by (split, index). A 2D slice is an axial plane whose
level is drawn from the split's bands: the test split's levels (:data:`TEST_BANDS_MM`) are
never used for training, and its deformation seeds are separate streams.

Orientation as in :mod:`recon.data.phantoms`: rows run anterior to posterior, columns from
the patient's right to left (radiological display); volumes are ``(D, N, N)`` from inferior to
superior. Units: linear attenuation, 1/cm (``mu = MU_WATER * (1 + HU / 1000)``).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from operators.ct import MU_WATER

from ..io.images import hu_to_mu
from .phantoms import SPLITS

__all__ = ["GENERATOR_VERSION", "LEVELS_MM", "TEST_BANDS_MM", "head_slice", "head_slices", "head_volume",
           "level_band", "template_maps"]

GENERATOR_VERSION = "1"
LEVELS_MM = (-35.0, 80.0)  # axial levels (MNI z, mm) of 2D slices: skull base to vertex
BAND_MM = 10.0  # the level range is cut into bands of this height
TEST_BANDS_MM = ((-15.0, -5.0), (25.0, 35.0), (65.0, 75.0))  # held-out levels: test slices only
_ROOT_SEED = 0xA7_0A11
_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
          "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
          "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
_ORIGIN_MM = np.array([-98.0, -134.0, -72.0])  # RAS mm of template voxel (0, 0, 0); 1 mm voxels


@lru_cache(maxsize=1)
def template_maps() -> dict[str, np.ndarray]:
    """The template's maps on its 1 mm RAS grid ``(197, 233, 189)``, float32, cached:
    ``gm``, ``wm``, ``csf`` (probabilities) and ``distance`` (mm to the brain surface, > 0 outside)."""
    import nibabel as nib
    from scipy import ndimage

    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("anatomical phantoms need nilearn's MNI152 template: pip install nilearn")
    folder = Path(spec.origin).parent / "datasets" / "data"
    maps = {}
    for key, name in _FILES.items():
        image = nib.as_closest_canonical(nib.load(folder / name))
        maps[key] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
    brain = ndimage.binary_closing(maps.pop("t1") > 0.02, iterations=2)
    brain = ndimage.binary_fill_holes(brain)
    maps["csf"] = np.clip(brain - maps["gm"] - maps["wm"], 0.0, 1.0).astype(np.float32)
    outside = ndimage.distance_transform_edt(~brain)
    inside = ndimage.distance_transform_edt(brain)
    maps["distance"] = (outside - inside + 0.5 * brain - 0.5 * ~brain).astype(np.float32)
    return maps


def _sample(volume: np.ndarray, points_mm: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """``volume`` (template grid) at RAS points ``(3, ...)`` mm, linear interpolation."""
    from scipy import ndimage

    index = points_mm - _ORIGIN_MM.reshape(3, *([1] * (points_mm.ndim - 1)))
    return ndimage.map_coordinates(volume, index.reshape(3, -1), order=order, mode="nearest" if fill is None
                                   else "constant", cval=fill or 0.0).reshape(points_mm.shape[1:])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation_px: float) -> np.ndarray:
    """Zero-mean unit-variance Gaussian field of ``shape`` low-passed (periodic) at ``correlation_px``."""
    spectrum = np.fft.rfftn(rng.standard_normal(shape))
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]), indexing="ij")
    spectrum *= np.exp(-2.0 * (np.pi * correlation_px) ** 2 * sum(f**2 for f in freqs))
    field = np.fft.irfftn(spectrum, s=shape, axes=tuple(range(len(shape))))
    return field / max(field.std(), 1e-12)


class _Head:
    """One random head: pose, deformation and tissue values, drawn from ``rng``."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        yaw, pitch, roll = np.radians(rng.normal(0.0, [6.0, 5.0, 3.0]))
        cz, sz, cx, sx, cy, sy = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        self.matrix = rz @ rx @ ry @ np.diag(1.0 / rng.uniform(0.92, 1.08, 3))  # head mm -> template mm
        self.shift = np.array([rng.normal(0.0, 4.0), rng.normal(-18.0, 4.0), 0.0])  # template point at centre
        # Smooth deformation: control points every ~30 mm, 3 mm amplitude; a finer one, 1 mm.
        self.coarse = rng.normal(0.0, 3.0, (3, 8, 9, 8))
        self.fine = rng.normal(0.0, 1.0, (3, 20, 24, 20))
        self.thickness = rng.normal(0.0, 1.0, (3, 6, 7, 6))  # skull and scalp thickness modulation
        self.sharpen = rng.uniform(1.5, 2.5)
        self.hu = {"gm": rng.uniform(34, 44), "wm": rng.uniform(22, 30), "csf": rng.uniform(0, 10),
                   "muscle": rng.uniform(40, 55), "fat": rng.uniform(-110, -80), "cortical": rng.uniform(1100, 1450),
                   "diploe": rng.uniform(350, 700)}
        self.layers_mm = {"subarachnoid": rng.uniform(1.0, 2.5), "inner": rng.uniform(1.2, 2.2),
                          "diploe": rng.uniform(2.0, 4.5), "outer": rng.uniform(1.2, 2.2),
                          "scalp": rng.uniform(3.0, 5.0), "fat": rng.uniform(1.0, 3.0)}
        self.sinus = (rng.uniform(12, 22), rng.uniform(5, 9), rng.uniform(10, 18), rng.uniform(-2, 14))
        self.mastoid = rng.uniform(0.3, 0.55)
        self.calcifications = [(p, rng.uniform(1.5, 3.0), rng.uniform(150, 450))
                               for p, chance in (((0, -30, 8), 0.5), ((24, -38, 14), 0.4), ((-24, -38, 14), 0.4))
                               if rng.uniform() < chance]
        self.lesions = [(rng.uniform(-45, 45), rng.uniform(-60, 40), rng.uniform(-10, 60), rng.uniform(3, 12),
                         rng.choice([rng.uniform(55, 80), rng.uniform(8, 18)]))
                        for _ in range(int(rng.integers(0, 3)))]

    def template_points(self, offsets_mm: np.ndarray, level_mm: float) -> np.ndarray:
        """Template RAS mm ``(3, ...)`` of head-frame offsets ``(3, ...)`` (RAS directions) about the
        point at axial ``level_mm``: pose, then the smooth deformation."""
        from scipy import ndimage

        centre = self.shift + np.array([0.0, 0.0, level_mm])
        points = np.tensordot(self.matrix, offsets_mm, axes=1) + centre.reshape(3, *([1] * (offsets_mm.ndim - 1)))
        flat = points.reshape(3, -1)
        for grid, step in ((self.coarse, 30.0), (self.fine, 10.0)):
            start = _ORIGIN_MM - step  # control point 0 sits one step outside the template box
            index = (flat - start[:, None]) / step
            flat = flat + np.stack([ndimage.map_coordinates(g, index, order=3, mode="nearest") for g in grid])
        return flat.reshape(points.shape)

    def attenuation(self, points: np.ndarray, pixel_mm: float) -> np.ndarray:
        """Attenuation (1/cm) at template points ``(3, ...)``; ``pixel_mm`` sets the partial-volume ramp."""
        from scipy import ndimage

        maps, hu, layer = template_maps(), self.hu, self.layers_mm
        d = _sample(maps["distance"], points, fill=None)
        index = (points.reshape(3, -1) - _ORIGIN_MM[:, None] + 40.0) / 45.0
        mod = np.stack([ndimage.map_coordinates(g, index, order=3, mode="nearest") for g in self.thickness])
        mod = mod.reshape(3, *points.shape[1:])

        def inside(threshold: np.ndarray | float) -> np.ndarray:  # fraction of the pixel with d < threshold
            return np.clip(0.5 + (threshold - d) / pixel_mm, 0.0, 1.0)

        sharp = lambda p: np.clip((p - 0.5) * self.sharpen + 0.5, 0.0, 1.0)  # noqa: E731
        wm, csf = sharp(_sample(maps["wm"], points)), sharp(_sample(maps["csf"], points))
        gm = np.clip(1.0 - wm - csf, 0.0, 1.0)
        brain = inside(0.0)
        out = brain * (gm * hu_to_mu(hu["gm"]) + wm * hu_to_mu(hu["wm"]) + csf * hu_to_mu(hu["csf"]))
        bounds = np.cumsum([layer["subarachnoid"] * (1 + 0.3 * mod[0]).clip(0.3),
                            layer["inner"] * np.ones_like(d),
                            layer["diploe"] * (1 + 0.35 * mod[1]).clip(0.3),
                            layer["outer"] * np.ones_like(d),
                            layer["fat"] * (1 + 0.4 * mod[2]).clip(0.2),
                            layer["scalp"] * (1 + 0.3 * mod[2]).clip(0.3)], axis=0)
        values = [hu_to_mu(hu["csf"]), hu_to_mu(hu["cortical"]), hu_to_mu(hu["diploe"]), hu_to_mu(hu["cortical"]),
                  hu_to_mu(hu["muscle"]), hu_to_mu(hu["fat"])]
        previous = brain
        for bound, value in zip(bounds, values):
            now = inside(bound)
            out += (now - previous) * value
            previous = now
        rel = points - np.reshape([0.0, 62.0, self.sinus[3]], (3, *([1] * (points.ndim - 1))))
        a, b, c, _ = self.sinus  # frontal sinus: air inside the frontal bone
        sinus = ((rel[0] / a) ** 2 + (rel[1] / b) ** 2 + (rel[2] / c) ** 2 < 1) & (d > bounds[1]) & (d < bounds[3] - 0.8)
        for side in (-1.0, 1.0):  # mastoid air cells behind the ears, low in the head
            rel = points - np.reshape([side * 52.0, -30.0, -30.0], (3, *([1] * (points.ndim - 1))))
            region = (rel[0] / 14) ** 2 + (rel[1] / 16) ** 2 + (rel[2] / 14) ** 2 < 1
            cells = np.sin(points[0] * 1.9) * np.sin(points[1] * 2.3 + 1.0) * np.sin(points[2] * 2.1) > self.mastoid
            sinus |= region & cells & (d > bounds[0] + 0.5) & (d < bounds[3])
        out[sinus] = 0.0
        for centre, radius, value in self.calcifications:
            r = np.sqrt(sum((points[i] - centre[i]) ** 2 for i in range(3)))
            out += np.clip(0.5 + (radius - r) / pixel_mm, 0, 1) * (hu_to_mu(value) - hu_to_mu(hu["csf"])) * brain
        for x0, y0, z0, radius, value in self.lesions:
            r = np.sqrt((points[0] - x0) ** 2 + (points[1] - y0) ** 2 + ((points[2] - z0) * 0.8) ** 2)
            weight = np.clip(0.5 + (radius - r) / pixel_mm, 0, 1) * brain * (1 - csf)
            out += weight * (hu_to_mu(value) - hu_to_mu(hu["wm"]))
        return out

    def textured(self, image: np.ndarray, pixel_mm: float) -> np.ndarray:
        """Soft-tissue texture (1-3 HU, 1-3 mm correlation) and a trabecular diploe pattern."""
        soft = (image > hu_to_mu(-200)) & (image < hu_to_mu(150))
        fine = _smooth_noise(self.rng, image.shape, self.rng.uniform(1.0, 3.0) / pixel_mm)
        bone = _smooth_noise(self.rng, image.shape, 0.6 / pixel_mm)
        image = image + soft * fine * self.rng.uniform(1.0, 3.0) * MU_WATER / 1000
        trabecular = (image > hu_to_mu(250)) & (image < hu_to_mu(900))
        image = image + trabecular * bone * self.rng.uniform(80, 160) * MU_WATER / 1000
        return np.clip(image, 0.0, None).astype(np.float32)


def _rng(split: str, index: int, kind: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError(f"phantom index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence(_ROOT_SEED, spawn_key=(kind, SPLITS.index(split), index)))


def level_band(level_mm: float) -> str:
    """``"test"`` if an axial level lies in a held-out band, else ``"train"``."""
    return "test" if any(lo <= level_mm < hi for lo, hi in TEST_BANDS_MM) else "train"


def _draw_level(rng: np.random.Generator, split: str, levels_mm: tuple[float, float] = LEVELS_MM) -> float:
    while True:
        level = rng.uniform(*levels_mm)
        if level_band(level) == split:
            return float(level)


def head_slice(split: str, index: int, size: int = 256, pixel_mm: float = 1.0, plane: str = "axial",
               levels_mm: tuple[float, float] = LEVELS_MM) -> np.ndarray:
    """Head slice ``index`` of ``split``, float32 ``(size, size)``, 1/cm, ``pixel_mm`` pixels.

    ``plane="axial"``: an axial plane at a level drawn from ``levels_mm`` (outside the held-out
    bands for training); ``"coronal"``: a coronal plane as :func:`head_volume`'s ``volume[:, r, :]``
    (rows inferior to superior about a level near 20 mm, columns as the axial slices'), at an
    anterior-posterior offset drawn over the whole field of view (its own seed stream).
    """
    if size < 16 or pixel_mm <= 0:
        raise ValueError(f"bad slice request: size={size}, pixel_mm={pixel_mm}")
    if plane not in ("axial", "coronal"):
        raise ValueError(f"plane must be 'axial' or 'coronal', got {plane!r}")
    axis = (np.arange(size) - (size - 1) / 2) * pixel_mm
    rows, cols = np.meshgrid(axis, axis, indexing="ij")
    if plane == "axial":
        rng = _rng(split, index, 0)
        level = _draw_level(rng, split, levels_mm)
        offsets = np.stack([-cols, -rows, np.zeros_like(rows)])  # columns toward the patient's left, rows posterior
    else:
        rng = _rng(split, index, 2)
        level = float(rng.normal(20.0, 8.0))
        depth = rng.uniform(-0.4, 0.4) * size * pixel_mm  # row of the volume the plane is
        offsets = np.stack([-cols, np.full_like(rows, -depth), rows])  # rows run inferior to superior
    head = _Head(rng)
    return head.textured(head.attenuation(head.template_points(offsets, level), pixel_mm), pixel_mm)


def head_slices(split: str, count: int, size: int = 256, pixel_mm: float = 1.0, start: int = 0,
                plane: str = "axial", levels_mm: tuple[float, float] = LEVELS_MM) -> np.ndarray:
    """Slices ``start .. start + count - 1`` (:func:`head_slice`) stacked as float32 ``(count, 1, size, size)``."""
    out = np.empty((count, 1, size, size), dtype=np.float32)
    for offset in range(count):
        out[offset, 0] = head_slice(split, start + offset, size, pixel_mm, plane, levels_mm)
    return out


def head_volume(split: str, index: int, size: int = 128, voxel_mm: float = 1.75, depth: int | None = None,
                level_mm: float = 20.0) -> np.ndarray:
    """Isotropic head volume ``index`` of ``split``, float32 ``(depth, size, size)`` (``depth`` defaults
    to ``size``), 1/cm, voxels of ``voxel_mm``, centred at axial level ``level_mm``, inferior first."""
    depth = size if depth is None else depth
    if size < 16 or depth < 1 or voxel_mm <= 0:
        raise ValueError(f"bad volume request: size={size}, depth={depth}, voxel_mm={voxel_mm}")
    rng = _rng(split, index, 1)
    head = _Head(rng)
    axis = (np.arange(size) - (size - 1) / 2) * voxel_mm
    z = (np.arange(depth) - (depth - 1) / 2) * voxel_mm
    zz, rows, cols = np.meshgrid(z, axis, axis, indexing="ij")
    offsets = np.stack([-cols, -rows, zz])
    return head.textured(head.attenuation(head.template_points(offsets, level_mm), voxel_mm), voxel_mm)


def head_source(split: str = "test", index: int = 0, size: int = 256, field_of_view_cm: float = 25.6):
    """Data source (``data=anatomy``): head slice ``index`` of ``split`` as a :class:`GroundTruth`,
    ``size`` pixels over ``field_of_view_cm`` (the same head at any ``size``)."""
    import torch

    from ..errors import ConfigError
    from .sources import GroundTruth

    try:
        if field_of_view_cm <= 0:
            raise ValueError(f"field_of_view_cm must be positive, got {field_of_view_cm}")
        image = head_slice(split, int(index), int(size), 10.0 * float(field_of_view_cm) / int(size))
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"data: {err}") from None
    return GroundTruth(torch.from_numpy(image)[None, None], float(field_of_view_cm) / int(size),
                       f"anatomy-head-{split}-{index}")


def volume_source(split: str = "test", index: int = 0, size: int = 128, field_of_view_cm: float = 25.0,
                  depth: int | None = None, level_mm: float = 20.0):
    """Data source (``data=anatomy_volume``): isotropic head volume ``(1, 1, D, N, N)``, ``size``
    voxels over ``field_of_view_cm`` (the same head at any ``size``)."""
    import torch

    from ..errors import ConfigError
    from .sources import GroundTruth

    try:
        if field_of_view_cm <= 0:
            raise ValueError(f"field_of_view_cm must be positive, got {field_of_view_cm}")
        voxel_mm = 10.0 * float(field_of_view_cm) / int(size)
        volume = head_volume(split, int(index), int(size), voxel_mm, depth, float(level_mm))
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"data: {err}") from None
    return GroundTruth(torch.from_numpy(volume)[None, None], voxel_mm / 10.0, f"anatomy-volume-{split}-{index}",
                       slice_thickness_cm=voxel_mm / 10.0)
