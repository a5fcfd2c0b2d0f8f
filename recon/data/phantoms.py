"""Seeded CT phantoms in linear attenuation units (1/cm at about 70 keV), float32 (size, size).

Images cover the normalised square [-1, 1]^2 (row 0 at the top = anterior, column 0 at the left
= the patient's right, as in radiological display); everything lies inside the unit circle,
the usual CT reconstruction disc, and outside the body is air (0). Shapes are drawn on a
supersampled grid and area-averaged. A phantom's anatomy depends on the random stream, not on
``size`` (except that lesion sites are checked on the pixel grid); its texture noise is drawn
on the pixel grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from operators.ct import MU_WATER

from .ellipses import Ellipse, ellipse_window, rasterize_ellipses

GENERATOR_VERSION = "1"
KINDS = ("ellipses", "head", "body", "mixed")
SPLITS = ("train", "test")

# Linear attenuation coefficients, 1/cm, at about 70 keV (mu = MU_WATER * (1 + HU / 1000)).
MU_AIR = 0.0
MU_LUNG = 0.04  # aerated lung parenchyma, about -800 HU
MU_FAT = 0.17  # adipose tissue, about -100 HU
# MU_WATER = 0.193, water, 0 HU: operators.ct.MU_WATER, the CT operators' unit convention
MU_CSF = 0.194  # cerebrospinal fluid, about +5 HU
MU_WHITE_MATTER = 0.198  # cerebral white matter, about +25 HU
MU_KIDNEY = 0.199  # unenhanced renal parenchyma, about +30 HU
MU_GREY_MATTER = 0.2  # cerebral grey matter, about +38 HU
MU_SOFT_TISSUE = 0.2  # muscle and generic soft tissue, scalp, about +40 HU
MU_BLOOD = 0.201  # unenhanced blood, spleen, about +42 HU
MU_LIVER = 0.204  # unenhanced liver, about +57 HU
MU_CANCELLOUS_BONE = 0.26  # trabecular bone with marrow (vertebral body, diploe), about +350 HU
MU_CORTICAL_BONE = 0.45  # dense cortical bone (skull tables, vertebral cortex, ribs), about +1330 HU

HEAD_FOV_CM = 25.0  # the square [-1, 1]^2 spans this width for head phantoms
BODY_FOV_CM = 40.0  # ... and this for body phantoms
SUPERSAMPLE = 2  # sub-pixel grid for area averaging of edges

_ANGLES = np.linspace(0.0, 2.0 * np.pi, 720, endpoint=False)  # polar angle table of contours


class _Canvas:
    """Paints regions on a supersampled grid of pixel centres, then area-averages."""

    def __init__(self, size: int, supersample: int = SUPERSAMPLE):
        self.size, self.supersample = size, supersample
        self.n = size * supersample
        centres = -1.0 + (np.arange(self.n) + 0.5) * (2.0 / self.n)
        self.x = centres[None, :]  # (1, n) x of each fine column
        self.y = -centres[:, None]  # (n, 1) y of each fine row, +1 at the top
        self.fine = np.zeros((self.n, self.n))

    def ellipse(self, a: float, b: float, x0: float, y0: float, phi_degrees: float = 0.0) -> np.ndarray:
        """Boolean mask (n, n) of an ellipse (see :class:`Ellipse`)."""
        mask = np.zeros((self.n, self.n), dtype=bool)
        rows, cols, inside = ellipse_window(Ellipse(1.0, a, b, x0, y0, phi_degrees), self.n)
        mask[rows, cols] = inside
        return mask

    def paint_ellipse(self, value: float, a: float, b: float, x0: float, y0: float,
                      phi_degrees: float = 0.0, within: np.ndarray | None = None, add: bool = False) -> None:
        """Set (or with ``add``, increase) the ellipse to ``value``, optionally only ``within`` a mask."""
        rows, cols, inside = ellipse_window(Ellipse(value, a, b, x0, y0, phi_degrees), self.n)
        if within is not None:
            inside = inside & within[rows, cols]
        window = self.fine[rows, cols]
        if add:
            window[inside] += value
        else:
            window[inside] = value

    def polar(self, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
        """Radius and angle (radians) of every fine pixel centre about (x0, y0), each (n, n)."""
        dx, dy = self.x - x0, self.y - y0
        return np.hypot(dx, dy), np.arctan2(dy, dx)

    @staticmethod
    def contour(polar: tuple[np.ndarray, np.ndarray], radius: np.ndarray) -> np.ndarray:
        """Mask (n, n) inside a star-shaped contour given as radius per angle of ``_ANGLES``."""
        rho, theta = polar
        return rho <= np.interp(theta, _ANGLES, radius, period=2.0 * np.pi)

    def contains(self, mask: np.ndarray, x: float, y: float) -> bool:
        """Whether the fine pixel holding the point (x, y) is set in ``mask`` (n, n)."""
        col = min(max(int((x + 1.0) * self.n / 2.0), 0), self.n - 1)
        row = min(max(int((1.0 - y) * self.n / 2.0), 0), self.n - 1)
        return bool(mask[row, col])

    def paint(self, mask: np.ndarray, value: float) -> None:
        """Set the fine pixels in ``mask`` (n, n) to ``value``."""
        self.fine[mask] = value

    def image(self) -> np.ndarray:
        """Area-averaged image, float64 (size, size)."""
        s = self.supersample
        return self.fine.reshape(self.size, s, self.size, s).mean(axis=(1, 3))


def _ellipse_radius(a: float, b: float, phi: float = 0.0) -> np.ndarray:
    """Polar radius of a centred ellipse (semi-axes a, b rotated by phi radians) per ``_ANGLES``."""
    t = _ANGLES - phi
    return a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)


def _wobble(rng: np.random.Generator, orders: tuple[int, int], amplitude: float) -> np.ndarray:
    """Smooth random periodic function per ``_ANGLES``: sum of cos(k t + psi_k) * N(0, amp^2) / k."""
    k = np.arange(orders[0], orders[1] + 1)
    coeffs = rng.normal(0.0, amplitude, k.size) / k
    phases = rng.uniform(0.0, 2.0 * np.pi, k.size)
    return (coeffs[:, None] * np.cos(k[:, None] * _ANGLES + phases[:, None])).sum(axis=0)


def _inside_fov(radius: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """``radius`` (a contour about (cx, cy)) shrunk if needed to stay within radius 0.95."""
    return radius * min(1.0, (0.95 - float(np.hypot(cx, cy))) / float(radius.max()))


def _at(table: np.ndarray, angle: float) -> float:
    """Value of a per-``_ANGLES`` table at ``angle`` (radians)."""
    return float(np.interp(angle, _ANGLES, table, period=2.0 * np.pi))


def _smooth_field(rng: np.random.Generator, size: int, correlation: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field (size, size).

    White noise low-passed by a Gaussian of standard deviation ``correlation`` (normalised
    units), applied in the Fourier domain (periodic).
    """
    sigma_px = correlation * size / 2.0
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * transfer, s=(size, size))
    return field / field.std()


def _textured(image: np.ndarray, rng: np.random.Generator, mm: float) -> np.ndarray:
    """``image`` times (1 + a * field), float32.

    A smooth modulation of standard deviation a = 0.4-0.8 % (peaks of about 1-2 %) with a
    correlation length of 2-6 mm (``mm``: normalised units per millimetre).
    """
    field = _smooth_field(rng, image.shape[0], rng.uniform(2.0, 6.0) * mm)
    return (image * (1.0 + rng.uniform(0.004, 0.008) * field)).clip(0.0, None).astype(np.float32)


def _lesion_contrast(rng: np.random.Generator, tissue: float) -> float:
    """A low lesion contrast: +-(0.5-2) % of ``tissue``, 1/cm."""
    return float(rng.choice((-1.0, 1.0)) * rng.uniform(0.005, 0.02) * tissue)


def _add_lesions(canvas: _Canvas, rng: np.random.Generator, count: int, allowed: np.ndarray, tissue: float,
                 radii: tuple[float, float], sample_centre: Callable[[], tuple[float, float]], draw: bool) -> None:
    """Add up to ``count`` non-overlapping low-contrast lesions inside ``allowed`` (n, n).

    ``radii`` bounds the lesion radius (normalised units); ``sample_centre`` proposes centres,
    of which the first inside ``allowed`` and clear of earlier lesions is taken (up to 20
    tries). The random draws do not depend on ``draw``, which only switches the painting.
    """
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        shape = rng.uniform(*radii) * rng.uniform(0.8, 1.2, 2)
        phi, contrast = rng.uniform(0.0, 180.0), _lesion_contrast(rng, tissue)
        for _ in range(20):
            x, y = sample_centre()
            clear = all(np.hypot(x - px, y - py) > 1.5 * (shape.max() + pr) for px, py, pr in placed)
            if clear and canvas.contains(allowed, x, y):
                placed.append((x, y, shape.max()))
                if draw:
                    canvas.paint_ellipse(contrast, *shape, x, y, phi, within=allowed, add=True)
                break


def random_ellipses(size: int, rng: np.random.Generator) -> np.ndarray:
    """Random overlapping ellipses inside the unit circle, float32 (size, size), 1/cm.

    A soft-tissue-like background ellipse plus 4-12 additive ellipses of -0.15..+0.15 /cm;
    the sum is clipped to [0, MU_CORTICAL_BONE].
    """
    def draw(value: float, major: float, minor: float, max_offset: float) -> Ellipse:
        radius, angle = rng.uniform(0.0, max_offset), rng.uniform(0.0, 2.0 * np.pi)
        return Ellipse(value, major, minor, radius * np.cos(angle), radius * np.sin(angle), rng.uniform(0.0, 180.0))

    major = rng.uniform(0.6, 0.85)
    ellipses = [draw(rng.uniform(MU_FAT, MU_LIVER), major, major * rng.uniform(0.7, 1.0), 0.05)]
    for _ in range(int(rng.integers(4, 13))):
        major = rng.uniform(0.04, 0.45)
        ellipses.append(draw(rng.uniform(-0.15, 0.15), major, major * rng.uniform(0.3, 1.0), 0.95 - major))
    image = rasterize_ellipses(ellipses, size, supersample=SUPERSAMPLE)
    return image.clip(0.0, MU_CORTICAL_BONE).astype(np.float32)


def head_phantom(size: int, rng: np.random.Generator, *, lesions: bool = True) -> np.ndarray:
    """Axial head slice, float32 (size, size), 1/cm; field of view HEAD_FOV_CM.

    Scalp, a skull of varying thickness (cortical tables around diploe), CSF with sulci, grey
    matter cortex around white matter, deep grey nuclei, lateral and third ventricles, the
    interhemispheric fissure, 1-4 low-contrast lesions of 1.5-5 mm radius, and a smooth texture
    (peaks of about 1-2 %). ``lesions=False`` gives the same slice without lesions (same random draws).
    """
    texture_rng = np.random.default_rng(rng.integers(2**63))
    mm = 2.0 / (10.0 * HEAD_FOV_CM)
    canvas = _Canvas(size)
    cx, cy = rng.normal(0.0, 0.015, 2)
    tilt = rng.normal(0.0, np.radians(4.0))
    cos_t, sin_t = np.cos(tilt), np.sin(tilt)

    def place(u: float, v: float) -> tuple[float, float]:
        """Head-frame offset (u right, v anterior) to image coordinates."""
        return cx + u * cos_t - v * sin_t, cy + u * sin_t + v * cos_t

    width, length = rng.uniform(0.56, 0.64), rng.uniform(0.72, 0.80)
    outer = _inside_fov(_ellipse_radius(width, length, tilt) * (1.0 + _wobble(rng, (2, 6), 0.02)), cx, cy)
    scalp = np.maximum(rng.uniform(3.0, 6.0) * (1.0 + _wobble(rng, (1, 4), 0.3)), 1.5) * mm
    frontal_occipital = 1.0 + 0.3 * np.sin(_ANGLES - tilt) ** 2
    skull = np.maximum(rng.uniform(4.5, 7.0) * frontal_occipital * (1.0 + _wobble(rng, (1, 5), 0.25)), 2.5) * mm
    sulci = np.clip(rng.uniform(0.8, 2.0) * (1.0 + _wobble(rng, (6, 30), 2.0)), 0.0, 4.0) * mm
    skull_outer = outer - scalp
    skull_inner = skull_outer - skull
    brain = skull_inner - sulci
    white = (skull_inner - 2.0 * mm) * rng.uniform(0.78, 0.85) * (1.0 + _wobble(rng, (4, 24), 0.08))
    diploe = rng.uniform(0.25, 0.4)  # fraction of the skull thickness in each cortical table

    polar = canvas.polar(cx, cy)
    canvas.paint(canvas.contour(polar, outer), MU_SOFT_TISSUE)
    canvas.paint(canvas.contour(polar, skull_outer), MU_CORTICAL_BONE)
    canvas.paint(canvas.contour(polar, skull_outer - diploe * skull), MU_CANCELLOUS_BONE)
    canvas.paint(canvas.contour(polar, skull_inner + diploe * skull), MU_CORTICAL_BONE)
    intracranial = canvas.contour(polar, skull_inner)
    canvas.paint(intracranial, MU_CSF)
    canvas.paint(canvas.contour(polar, brain), MU_GREY_MATTER)
    canvas.paint(canvas.contour(polar, white), MU_WHITE_MATTER)

    tilt_deg = np.degrees(tilt)
    for side in (-1.0, 1.0):  # deep grey nuclei (thalamus, basal ganglia)
        canvas.paint_ellipse(MU_GREY_MATTER, rng.uniform(0.035, 0.055), rng.uniform(0.07, 0.1),
                             *place(side * rng.uniform(0.12, 0.16), rng.uniform(-0.06, 0.04)),
                             tilt_deg - side * rng.uniform(10.0, 25.0))
    for side in (-1.0, 1.0):  # lateral ventricles: frontal horn and body / occipital horn
        canvas.paint_ellipse(MU_CSF, rng.uniform(0.02, 0.04), rng.uniform(0.1, 0.16),
                             *place(side * rng.uniform(0.04, 0.07), rng.uniform(0.08, 0.14)),
                             tilt_deg - side * rng.uniform(10.0, 25.0))
        canvas.paint_ellipse(MU_CSF, rng.uniform(0.018, 0.035), rng.uniform(0.08, 0.13),
                             *place(side * rng.uniform(0.07, 0.1), rng.uniform(-0.14, -0.06)),
                             tilt_deg + side * rng.uniform(5.0, 20.0))
    canvas.paint_ellipse(MU_CSF, rng.uniform(0.006, 0.012), rng.uniform(0.03, 0.05),
                         *place(0.0, rng.uniform(-0.05, 0.01)), tilt_deg)
    for direction in (-1.0, 1.0):  # interhemispheric fissure, anterior and posterior
        reach = _at(brain, tilt + direction * np.pi / 2)
        canvas.paint_ellipse(MU_CSF, rng.uniform(0.6, 1.0) * mm, rng.uniform(0.25, 0.4) * reach,
                             *place(0.0, direction * reach), tilt_deg, within=intracranial)

    parenchyma = (canvas.fine == MU_GREY_MATTER) | (canvas.fine == MU_WHITE_MATTER)

    def lesion_site() -> tuple[float, float]:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        distance = rng.uniform(0.3, 0.85) * _at(brain, angle + tilt)
        return place(distance * np.cos(angle), distance * np.sin(angle))

    _add_lesions(canvas, rng, int(rng.integers(1, 5)), parenchyma, MU_WHITE_MATTER, (1.5 * mm, 5.0 * mm), lesion_site, lesions)
    return _textured(canvas.image(), texture_rng, mm)


def body_phantom(size: int, rng: np.random.Generator, *, lesions: bool = True) -> np.ndarray:
    """Axial upper-abdomen slice, float32 (size, size), 1/cm; field of view BODY_FOV_CM.

    Subcutaneous fat of varying thickness, a muscle wall, visceral fat, liver, spleen, stomach
    with an air-fluid level, bowel loops (gas or fluid), aorta and IVC, a vertebra (cortex,
    cancellous body, canal, spinous and transverse processes), paraspinal and psoas muscles,
    ribs, either kidneys or lung bases with vessels, 1-3 low-contrast liver lesions of 3-10 mm
    radius, and a smooth texture (peaks of about 1-2 %). ``lesions=False`` gives the same slice without lesions.
    """
    texture_rng = np.random.default_rng(rng.integers(2**63))
    mm = 2.0 / (10.0 * BODY_FOV_CM)
    canvas = _Canvas(size)
    cx, cy = rng.normal(0.0, 0.015), rng.normal(0.0, 0.015)
    half_width, half_depth = rng.uniform(0.72, 0.88), rng.uniform(0.48, 0.6)
    outer = _inside_fov(_ellipse_radius(half_width, half_depth) * (1.0 + _wobble(rng, (2, 5), 0.03)), cx, cy)
    fat = np.maximum(rng.uniform(8.0, 25.0) * (1.0 + _wobble(rng, (1, 4), 0.4)), 3.0) * mm
    wall = np.maximum(rng.uniform(6.0, 12.0) * (1.0 + _wobble(rng, (1, 4), 0.3)), 3.0) * mm

    polar = canvas.polar(cx, cy)
    canvas.paint(canvas.contour(polar, outer), MU_FAT)
    inside_fat = canvas.contour(polar, outer - fat)
    canvas.paint(inside_fat, MU_SOFT_TISSUE)
    cavity = canvas.contour(polar, outer - fat - wall)
    canvas.paint(cavity, MU_FAT)

    def at(u: float, v: float) -> tuple[float, float]:
        """Body-frame fractions (u of the half width, v of the half depth) to image coordinates."""
        return cx + u * half_width, cy + v * half_depth

    # Liver (patient's right = image left) with lesions, spleen, stomach, bowel loops.
    liver_u, liver_v = rng.uniform(-0.5, -0.38), rng.uniform(0.0, 0.15)
    liver_a, liver_b = rng.uniform(0.35, 0.45) * half_width, rng.uniform(0.55, 0.7) * half_depth
    canvas.paint_ellipse(MU_LIVER, liver_a, liver_b, *at(liver_u, liver_v), rng.uniform(-15.0, 15.0), within=cavity)
    canvas.paint_ellipse(MU_LIVER, rng.uniform(0.18, 0.28) * half_width, rng.uniform(0.2, 0.3) * half_depth,
                         *at(rng.uniform(-0.2, -0.05), rng.uniform(0.25, 0.4)), rng.uniform(-30.0, 30.0),
                         within=cavity)
    canvas.paint_ellipse(MU_BLOOD, rng.uniform(0.1, 0.16) * half_width, rng.uniform(0.2, 0.3) * half_depth,
                         *at(rng.uniform(0.5, 0.62), rng.uniform(-0.3, -0.1)), rng.uniform(-40.0, -10.0),
                         within=cavity)
    stomach_a, stomach_b = rng.uniform(0.15, 0.22) * half_width, rng.uniform(0.2, 0.3) * half_depth
    stomach_x, stomach_y = at(rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.35))
    stomach_phi = rng.uniform(-30.0, 30.0)
    stomach = canvas.ellipse(stomach_a, stomach_b, stomach_x, stomach_y, stomach_phi) & cavity
    canvas.paint(stomach, MU_SOFT_TISSUE)
    lumen = canvas.ellipse(stomach_a - 3 * mm, stomach_b - 3 * mm, stomach_x, stomach_y, stomach_phi) & stomach
    canvas.paint(lumen, MU_WATER)
    canvas.paint(lumen & (canvas.y > stomach_y + rng.uniform(0.0, 0.6) * stomach_b), MU_AIR)  # air-fluid level
    for _ in range(int(rng.integers(3, 8))):
        radius = rng.uniform(8.0, 18.0) * mm
        centre = at(rng.uniform(-0.3, 0.6), rng.uniform(0.1, 0.7))
        shape = radius * rng.uniform(0.7, 1.3, 2)
        angle = rng.uniform(0.0, 180.0)
        canvas.paint_ellipse(MU_SOFT_TISSUE, *shape, *centre, angle, within=cavity)
        canvas.paint_ellipse(MU_AIR if rng.random() < 0.4 else MU_WATER, *(shape - 2.5 * mm), *centre, angle,
                             within=cavity)

    # Vertebra, built forwards from just inside the posterior subcutaneous fat.
    tip_y = cy - _at(outer - fat, 1.5 * np.pi) + rng.uniform(5.0, 10.0) * mm
    canal_r = rng.uniform(6.0, 8.0) * mm
    canal_y = tip_y + rng.uniform(22.0, 28.0) * mm + canal_r
    body_r = rng.uniform(15.0, 20.0) * mm
    body_y = canal_y + canal_r + 3.0 * mm + body_r
    body_a = body_r * rng.uniform(1.05, 1.2)
    kidneys = rng.random() < 0.6  # else a higher slice through the lung bases
    for side in (-1.0, 1.0):
        if kidneys:
            ka, kb = rng.uniform(20.0, 28.0) * mm, rng.uniform(30.0, 40.0) * mm
            kx, ky = cx + side * (body_a + rng.uniform(40.0, 55.0) * mm), body_y + rng.uniform(-5.0, 10.0) * mm
            phi = -side * rng.uniform(20.0, 40.0)
            canvas.paint_ellipse(MU_KIDNEY, ka, kb, kx, ky, phi, within=cavity)
            canvas.paint_ellipse(MU_FAT, 0.35 * ka, 0.45 * kb, kx - side * 0.45 * ka, ky, phi, within=cavity)
        else:
            lung = canvas.ellipse(rng.uniform(0.2, 0.28) * half_width, rng.uniform(0.28, 0.38) * half_depth,
                                  *at(side * rng.uniform(0.42, 0.52), rng.uniform(-0.45, -0.3)),
                                  side * rng.uniform(0.0, 30.0)) & cavity
            canvas.paint(lung, MU_LUNG)
            for _ in range(int(rng.integers(6, 15))):  # vessels
                r = rng.uniform(1.0, 3.0) * mm
                canvas.paint_ellipse(MU_BLOOD, r, r, *at(side * rng.uniform(0.25, 0.7), rng.uniform(-0.75, -0.05)),
                                     within=lung)
    for side in (-1.0, 1.0):  # paraspinal and psoas muscles
        canvas.paint_ellipse(MU_SOFT_TISSUE, rng.uniform(20.0, 28.0) * mm, rng.uniform(18.0, 25.0) * mm,
                             cx + side * rng.uniform(25.0, 32.0) * mm, canal_y - 6.0 * mm, 0.0, within=inside_fat)
        canvas.paint_ellipse(MU_SOFT_TISSUE, rng.uniform(9.0, 14.0) * mm, rng.uniform(12.0, 18.0) * mm,
                             cx + side * (body_a + 10.0 * mm), body_y - 3.0 * mm, side * 20.0, within=cavity)
    aorta_r = rng.uniform(10.0, 13.0) * mm
    canvas.paint_ellipse(MU_BLOOD, aorta_r, aorta_r, cx + rng.uniform(8.0, 18.0) * mm,
                         body_y + body_r + aorta_r + 2.0 * mm)
    canvas.paint_ellipse(MU_BLOOD, rng.uniform(10.0, 14.0) * mm, rng.uniform(7.0, 10.0) * mm,
                         cx - rng.uniform(25.0, 35.0) * mm, body_y + body_r + 10.0 * mm)
    canvas.paint_ellipse(MU_CORTICAL_BONE, body_a, body_r, cx, body_y)
    canvas.paint_ellipse(MU_CANCELLOUS_BONE, body_a - 2.0 * mm, body_r - 2.0 * mm, cx, body_y)
    canvas.paint_ellipse(MU_CORTICAL_BONE, canal_r + 4.0 * mm, canal_r + 4.0 * mm, cx, canal_y)
    canvas.paint_ellipse(MU_CORTICAL_BONE, 3.5 * mm, 0.5 * (canal_y - tip_y), cx, 0.5 * (canal_y + tip_y))
    for side in (-1.0, 1.0):
        canvas.paint_ellipse(MU_CORTICAL_BONE, rng.uniform(11.0, 14.0) * mm, 4.0 * mm,
                             cx + side * (canal_r + 12.0 * mm), canal_y + 3.0 * mm, side * 10.0)
    canvas.paint_ellipse(MU_CSF, canal_r, canal_r, cx, canal_y)
    canvas.paint_ellipse(MU_WHITE_MATTER, 0.6 * canal_r, 0.5 * canal_r, cx, canal_y)

    # Ribs in the muscle wall, avoiding the anterior (90 deg) and posterior (270 deg) midlines.
    for _ in range(int(rng.integers(8, 15))):
        angle = np.radians(rng.uniform(-55.0, 60.0))
        angle = np.pi - angle if rng.random() < 0.5 else angle
        distance = _at(outer - fat - 0.5 * wall, angle)
        x, y = cx + distance * np.cos(angle), cy + distance * np.sin(angle)
        ra, rb = rng.uniform(5.0, 9.0) * mm, rng.uniform(3.5, 5.0) * mm
        phi = np.degrees(angle) + 90.0  # long axis along the tangent
        canvas.paint_ellipse(MU_CORTICAL_BONE, ra, rb, x, y, phi)
        canvas.paint_ellipse(MU_CANCELLOUS_BONE, ra - 1.5 * mm, rb - 1.5 * mm, x, y, phi)

    liver = canvas.fine == MU_LIVER  # liver not covered by later structures
    liver_x, liver_y = at(liver_u, liver_v)

    def lesion_site() -> tuple[float, float]:
        u, v = rng.uniform(-0.8, 0.8, 2)
        return liver_x + u * liver_a, liver_y + v * liver_b

    _add_lesions(canvas, rng, int(rng.integers(1, 4)), liver, MU_LIVER, (3.0 * mm, 10.0 * mm), lesion_site, lesions)
    return _textured(canvas.image(), texture_rng, mm)


_GENERATORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "ellipses": random_ellipses,
    "head": head_phantom,
    "body": body_phantom,
}
_ROOT_SEED = 0x5EC0_C7  # entropy shared by all phantom streams; spawn keys separate them


def make_phantom(kind: str, split: str, index: int, size: int = 128) -> np.ndarray:
    """Phantom number ``index`` of ``kind`` and ``split``, float32 (size, size), 1/cm.

    Fully determined by (kind, split, index, size); each (kind, split, index) has its own
    independent random stream, so the train and test splits never share a phantom. ``"mixed"``
    cycles head, body, ellipses with the index (its own streams).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError(f"phantom index must be >= 0, got {index}")
    if size < 16:
        raise ValueError(f"phantom size must be >= 16 pixels, got {size}")
    seed = np.random.SeedSequence(_ROOT_SEED, spawn_key=(KINDS.index(kind), SPLITS.index(split), int(index)))
    return _GENERATORS[anatomy(kind, index)](size, np.random.default_rng(seed))


def anatomy(kind: str, index: int) -> str:
    """The generator behind phantom ``index`` of ``kind``: ``"mixed"`` cycles head, body, ellipses."""
    return ("head", "body", "ellipses")[index % 3] if kind == "mixed" else kind


def field_of_view_cm(kind: str, index: int) -> float:
    """Physical width of phantom ``index`` of ``kind`` (body phantoms span BODY_FOV_CM)."""
    return BODY_FOV_CM if anatomy(kind, index) == "body" else HEAD_FOV_CM


def make_phantoms(kind: str, split: str, count: int, size: int = 128, start: int = 0) -> np.ndarray:
    """Phantoms ``start .. start + count - 1`` stacked as float32 (count, 1, size, size)."""
    if count < 0:
        raise ValueError(f"phantom count must be >= 0, got {count}")
    out = np.empty((count, 1, size, size), dtype=np.float32)
    for offset in range(count):
        out[offset, 0] = make_phantom(kind, split, start + offset, size)
    return out
