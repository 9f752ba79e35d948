"""Procedural textures and shading for the synthetic ERP renderer (``synth_scene``).

Everything here is vectorised over ``N`` surface points and returns float32 colours in ``[0, 1]``.
Object textures are *solid* textures: the pattern is a function of the hit point in the object's
own frame, normalised by its half size (so ``q`` lies roughly in ``[-1, 1]^3``), which needs no
UV mapping and is continuous across every edge, including the 0/360 degree seam of the ERP image.

Colours are chosen so that a segmenter has something to see: every object gets its own hue (a
golden-ratio sequence), saturated, and two tones of it; the background (walls, floor, sky) is
kept low in saturation.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from enum import Enum
import math

import numpy as np

Array = np.ndarray

GOLDEN_RATIO_FRAC = 0.6180339887


class TexturePattern(str, Enum):
    """Procedural pattern of one object (two tones of the object's hue)."""

    STRIPES = 'stripes'
    CHECKER = 'checker'
    NOISE = 'noise'
    GRADIENT = 'gradient'
    RINGS = 'rings'


# Cycled over objects sorted by azimuth, so neighbours on the ring never share a pattern.
CYCLED_PATTERNS = (TexturePattern.STRIPES, TexturePattern.CHECKER, TexturePattern.NOISE,
                   TexturePattern.GRADIENT)


@dataclass(frozen=True)
class ObjectTexture:
    """Texture of one object.

    Attributes:
        pattern: which procedural pattern mixes the two colours.
        colour_a: first colour, RGB float ``(3,)`` in [0, 1] (bright tone).
        colour_b: second colour, RGB float ``(3,)`` in [0, 1] (dark tone of a nearby hue).
        axis: unit vector ``(3,)`` in the object's frame along which stripes / gradients run.
        frequency: pattern repetitions across the object's half size.
        phases: ``(3,)`` phases of the sinusoidal noise, radians.
        emissive: colour is not shaded (lamps).

    """

    pattern: TexturePattern
    colour_a: Array
    colour_b: Array
    axis: Array
    frequency: float
    phases: Array
    emissive: bool = False


def hsv_rgb(hue: float, saturation: float, value: float) -> Array:
    """HSV (each in [0, 1], hue wraps) -> RGB float32 ``(3,)``."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32)


def make_texture(rng: np.random.Generator, index: int, hue_offset: float,
                 pattern: TexturePattern, emissive: bool = False) -> ObjectTexture:
    """Texture for the ``index``-th object: hue from a golden-ratio sequence, two tones of it."""
    hue = hue_offset + index * GOLDEN_RATIO_FRAC
    colour_a = hsv_rgb(hue, rng.uniform(0.65, 0.85), rng.uniform(0.85, 1.0))
    colour_b = hsv_rgb(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.8, 1.0),
                       rng.uniform(0.35, 0.5))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return ObjectTexture(pattern=pattern, colour_a=colour_a, colour_b=colour_b,
                         axis=axis.astype(np.float32), frequency=float(rng.uniform(1.5, 3.0)),
                         phases=rng.uniform(0.0, 2.0 * math.pi, size=3).astype(np.float32),
                         emissive=emissive)


def _sine_noise(q: Array, phases: Array, scale: float) -> Array:
    """Smooth pseudo-noise in [-1, 1] from three crossed sinusoids, ``q`` ``(N, 3)``."""
    s = scale
    n = (np.sin(s * (q[:, 0] * 1.3 + q[:, 1] * 0.7) + phases[0])
         + np.sin(s * (q[:, 1] * 1.1 - q[:, 2] * 0.9) + phases[1])
         + np.sin(s * (q[:, 2] * 1.2 + q[:, 0] * 0.8) + phases[2]))
    return n / 3.0


def object_albedo(texture: ObjectTexture, q: Array) -> Array:
    """Albedo ``(N, 3)`` float32 at normalised object-frame points ``q`` ``(N, 3)``."""
    pattern = texture.pattern
    f = np.float32(texture.frequency)
    if pattern is TexturePattern.STRIPES:
        mix = (np.sin(np.float32(math.pi) * f * (q @ texture.axis)) > 0).astype(np.float32)
    elif pattern is TexturePattern.CHECKER:
        cells = np.floor(q * (f * np.float32(1.5))).astype(np.int32).sum(axis=1)
        mix = (cells & 1).astype(np.float32)
    elif pattern is TexturePattern.NOISE:
        mix = 0.5 + 0.5 * _sine_noise(q, texture.phases, 2.5 * float(f))
    elif pattern is TexturePattern.GRADIENT:
        mix = np.clip(0.5 + 0.5 * (q @ texture.axis), 0.0, 1.0)
    else:  # RINGS: concentric about the object's vertical axis
        radius = np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2)
        mix = (np.sin(np.float32(2.0 * math.pi) * f * radius) > 0).astype(np.float32)
    mix = mix.astype(np.float32)[:, None]
    return (1.0 - mix) * texture.colour_a + mix * texture.colour_b


def lambert(albedo: Array, normal: Array, light_dir: Array, ambient: float) -> Array:
    """Lambert + ambient: ``albedo * (ambient + (1 - ambient) * max(0, n . l))``, ``(N, 3)``."""
    cos_incidence = np.maximum(normal @ light_dir.astype(np.float32), 0.0)
    return albedo * (ambient + (1.0 - ambient) * cos_incidence)[:, None]


def to_uint8(colour: Array) -> Array:
    """Float colour in [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(colour * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------- background

WALL_RGB = np.array([0.78, 0.74, 0.66], dtype=np.float32)
FLOOR_RGB = np.array([0.55, 0.42, 0.30], dtype=np.float32)
CEILING_RGB = np.array([0.86, 0.86, 0.84], dtype=np.float32)
GRASS_RGB = np.array([0.33, 0.45, 0.22], dtype=np.float32)
HORIZON_RGB = np.array([0.82, 0.87, 0.93], dtype=np.float32)
ZENITH_RGB = np.array([0.30, 0.50, 0.85], dtype=np.float32)
CLOUD_RGB = np.array([0.96, 0.96, 0.97], dtype=np.float32)


def _hash01(index: Array) -> Array:
    """Deterministic pseudo-random value in [0, 1) per integer (a small integer hash)."""
    h = (index.astype(np.int64) * 2654435761) & 0xFFFFFFFF
    h = (h ^ (h >> 15)) * 2246822519 & 0xFFFFFFFF
    return ((h ^ (h >> 13)) & 0xFFFF).astype(np.float32) / np.float32(65536.0)


def floor_albedo(px: Array, py: Array) -> Array:
    """Wooden planks along world x, 0.25 m wide, each with its own tone and a faint grain."""
    plank = np.floor(py * 4.0)
    tone = 0.8 + 0.4 * _hash01(plank)
    grain = 1.0 + 0.06 * np.sin(px * 9.0 + plank * 1.7 + 2.0 * np.sin(px * 1.3))
    seam = np.where(np.abs(py * 4.0 - np.round(py * 4.0)) < 0.04, 0.6, 1.0)
    return FLOOR_RGB * (tone * grain * seam).astype(np.float32)[:, None]


def wall_albedo(along: Array, pz: Array) -> Array:
    """Striped wallpaper (``along`` = coordinate along the wall) with a dark skirting board."""
    stripes = 1.0 + 0.07 * np.sign(np.sin(along * (2.0 * math.pi / 0.4)))
    skirting = np.where(pz < 0.12, 0.55, 1.0)
    return WALL_RGB * (stripes * skirting).astype(np.float32)[:, None]


def ceiling_albedo(px: Array, py: Array) -> Array:
    """Ceiling tiles of 0.6 m with darker joints."""
    fx = np.abs(px / 0.6 - np.round(px / 0.6))
    fy = np.abs(py / 0.6 - np.round(py / 0.6))
    joint = np.where(np.minimum(fx, fy) < 0.03, 0.75, 1.0)
    return CEILING_RGB * joint.astype(np.float32)[:, None]


def ground_albedo(px: Array, py: Array, distance_m: Array) -> Array:
    """Grass with patches and a distance haze towards the horizon colour."""
    q = np.stack([px, py, np.zeros_like(px)], axis=1) * np.float32(0.35)
    patches = 0.5 + 0.5 * _sine_noise(q, np.array([0.3, 1.9, 4.1], dtype=np.float32), 1.0)
    detail = 0.5 + 0.5 * _sine_noise(q * 6.0, np.array([2.2, 0.4, 5.3], dtype=np.float32), 1.0)
    grass = GRASS_RGB * (0.75 + 0.35 * patches + 0.15 * detail).astype(np.float32)[:, None]
    haze = (1.0 - np.exp(-distance_m / 80.0)).astype(np.float32)[:, None]
    return (1.0 - haze) * grass + haze * HORIZON_RGB


def sky_colour(dx: Array, dy: Array, dz: Array) -> Array:
    """Sky by unit world direction (``dz >= 0``): blue gradient with soft clouds."""
    up = np.clip(dz, 0.0, 1.0)[:, None]
    base = (1.0 - up) * HORIZON_RGB + up * ZENITH_RGB
    # Project onto a cloud layer so clouds shrink towards the horizon, and fade them out there.
    scale = 1.5 / np.maximum(dz, 0.05)
    layer = np.stack([dx * scale, dy * scale, np.zeros_like(scale)], axis=1)
    cloud = _sine_noise(layer, np.array([0.7, 2.9, 1.3], dtype=np.float32), 1.0)
    cover = np.clip((cloud - 0.15) * 3.0, 0.0, 1.0) * np.clip(dz * 6.0, 0.0, 1.0)
    weight = cover.astype(np.float32)[:, None]
    return (1.0 - weight) * base + weight * CLOUD_RGB
