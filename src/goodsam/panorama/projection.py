"""Pinhole frames onto an equirectangular (ERP) band: the geometry behind ``goodsam data pinhole-to-erp``.

Conventions (all angles in degrees at the API, radians inside):

* **ERP grid.** ``erp_width`` columns cover 360° of longitude; column ``u`` (pixel centre ``u + 0.5``)
  has longitude ``lon = ((u + 0.5) / W - 0.5) * 360``, so longitude 0 sits at the panorama's horizontal
  centre and grows to the right. Rows cover a band of ``fov_vertical_deg`` centred on the horizon
  (default ``H * 360 / W``: square pixels, e.g. 2048×400 → 70.3°); row ``v`` has latitude
  ``lat = fov / 2 - (v + 0.5) * fov / H``: positive (up) at the top.
* **Cameras.** A frame with yaw ``ψ`` and pitch ``θ`` looks along longitude ``ψ`` (positive = right)
  and latitude ``θ`` (positive = up), without roll, so its principal point lands at ``(ψ, θ)``.
  Camera axes follow OpenCV: x right, y down, z forward; pixel ``(u, v)`` sees the ray
  ``((u - cx) / fx, (v - cy) / fy, 1)``, with integer coordinates at pixel centres.
* **Sampling.** Inverse mapping: every ERP pixel's ray is rotated into each camera, kept where
  ``z > 0`` and the projection falls inside the image (``-0.5 <= u < w - 0.5``, same for v), images are
  sampled bilinearly (edges replicated), labels with nearest neighbour (never interpolated).
  Uncovered pixels get ``fill`` in the image and ``IGNORE_INDEX`` (255) in the label.
* **Overlaps.** Where several frames see a pixel, the frame whose optical axis is closest to the
  pixel's ray (largest cosine) wins; ties go to the earlier frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from goodsam.classes import IGNORE_INDEX
from goodsam.errors import ConfigError, ImageError


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics (pixels) valid for images of ``width`` × ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise ConfigError(f"focal lengths must be positive, got fx={self.fx:g}, fy={self.fy:g}")
        if self.width < 1 or self.height < 1:
            raise ConfigError(f"intrinsics image size must be positive, got {self.width}x{self.height}")

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The intrinsics of the same camera after resizing its images to ``width`` × ``height``.

        Pixel-centre convention: a coordinate ``c`` becomes ``(c + 0.5) * s - 0.5``.
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# Cityscapes' mean camera (camera/*.json of the dataset) at its native 2048×1024.
CITYSCAPES_INTRINSICS = Intrinsics(fx=2262.52, fy=2265.30, cx=1096.98, cy=513.14, width=2048, height=1024)


def band_fov_deg(erp_width: int, erp_height: int, fov_vertical_deg: float | None = None) -> float:
    """The band's vertical extent: given, or the square-pixel default ``H * 360 / W``."""
    if erp_width < 1 or erp_height < 1:
        raise ConfigError(f"ERP size must be positive, got {erp_width}x{erp_height}")
    fov = erp_height * 360.0 / erp_width if fov_vertical_deg is None else float(fov_vertical_deg)
    if not 0.0 < fov <= 180.0:
        raise ConfigError(f"vertical field of view must be in (0, 180] degrees, got {fov:g}")
    return fov


def erp_angles(erp_width: int, erp_height: int, fov_vertical_deg: float | None = None) -> tuple:
    """Longitudes (W,) and latitudes (H,) of the ERP pixel centres, in radians."""
    fov = np.deg2rad(band_fov_deg(erp_width, erp_height, fov_vertical_deg))
    lon = ((np.arange(erp_width) + 0.5) / erp_width - 0.5) * 2.0 * np.pi
    lat = fov / 2.0 - (np.arange(erp_height) + 0.5) * fov / erp_height
    return lon, lat


def angles_to_erp(
    lon_deg: np.ndarray | float,
    lat_deg: np.ndarray | float,
    erp_width: int = 2048,
    erp_height: int = 400,
    fov_vertical_deg: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ERP (column, row) as floats (pixel centres at integers) of longitude/latitude in degrees.

    Longitudes wrap into [-180, 180); rows outside ``[-0.5, H - 0.5)`` are outside the band.
    """
    fov = band_fov_deg(erp_width, erp_height, fov_vertical_deg)
    lon = (np.asarray(lon_deg, dtype=np.float64) + 180.0) % 360.0 - 180.0
    col = (lon / 360.0 + 0.5) * erp_width - 0.5
    row = (0.5 - np.asarray(lat_deg, dtype=np.float64) / fov) * erp_height - 0.5
    return col, row


def camera_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """3×3 rotation taking camera coordinates (x right, y down, z forward) to the panorama's frame."""
    yaw, pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    cy_, sy_ = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy_, 0.0, sy_], [0.0, 1.0, 0.0], [-sy_, 0.0, cy_]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])  # +pitch tilts z towards -y (up)
    return r_yaw @ r_pitch


def principal_point_erp(
    yaw_deg: float,
    pitch_deg: float = 0.0,
    erp_width: int = 2048,
    erp_height: int = 400,
    fov_vertical_deg: float | None = None,
) -> tuple[float, float]:
    """ERP (column, row) where a frame's principal point lands: its optical axis is (yaw, pitch)."""
    col, row = angles_to_erp(yaw_deg, pitch_deg, erp_width, erp_height, fov_vertical_deg)
    return float(col), float(row)


def pinhole_to_erp(
    u: np.ndarray | float,
    v: np.ndarray | float,
    yaw_deg: float,
    pitch_deg: float,
    intrinsics: Intrinsics,
    erp_width: int = 2048,
    erp_height: int = 400,
    fov_vertical_deg: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Forward map: ERP (column, row) floats of pinhole pixel coordinates ``(u, v)`` of one frame."""
    k = intrinsics
    x = (np.asarray(u, dtype=np.float64) - k.cx) / k.fx
    y = (np.asarray(v, dtype=np.float64) - k.cy) / k.fy
    ray = np.stack(np.broadcast_arrays(x, y, np.ones_like(x)), axis=-1)
    ray = ray @ camera_rotation(yaw_deg, pitch_deg).T
    lon = np.degrees(np.arctan2(ray[..., 0], ray[..., 2]))
    lat = np.degrees(np.arctan2(-ray[..., 1], np.hypot(ray[..., 0], ray[..., 2])))
    return angles_to_erp(lon, lat, erp_width, erp_height, fov_vertical_deg)


def _as_list(value, n: int, name: str) -> list:
    if isinstance(value, Intrinsics) or np.isscalar(value):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ConfigError(f"{name}: expected {n} value(s), one per frame, got {len(values)}")
    return values


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample an HxWxC image at float pixel coordinates (edges replicated); returns Nx C float."""
    h, w = image.shape[:2]
    u = np.clip(u, 0.0, w - 1.0)
    v = np.clip(v, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(u).astype(np.intp), w - 1)
    y0 = np.minimum(np.floor(v).astype(np.intp), h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = (u - x0)[:, None]
    wy = (v - y0)[:, None]
    img = image.astype(np.float32, copy=False)
    top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
    bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def project_to_erp(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None,
    yaws_deg: Sequence[float],
    pitches_deg: Sequence[float] | float | None = None,
    intrinsics: Intrinsics | Sequence[Intrinsics] = CITYSCAPES_INTRINSICS,
    erp_width: int = 2048,
    erp_height: int = 400,
    fov_vertical_deg: float | None = None,
    fill: Sequence[int] | int = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Project pinhole frames (HxWx3 uint8, with optional HxW uint8 labels) onto one ERP band.

    ``intrinsics`` (one for all frames, or one per frame) are rescaled to each image's actual size.
    Returns ``(erp_image HxWx3 uint8, erp_label HxW uint8 or None, coverage HxW bool)``; see the module
    docstring for the conventions and the overlap rule.
    """
    n = len(images)
    if n == 0:
        raise ConfigError("project_to_erp needs at least one frame")
    yaws = _as_list(yaws_deg, n, "yaws")
    pitches = _as_list(0.0 if pitches_deg is None else pitches_deg, n, "pitches")
    cams = _as_list(intrinsics, n, "intrinsics")
    if labels is not None and len(labels) != n:
        raise ConfigError(f"got {n} images but {len(labels)} label maps")
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f"frame {i}: expected an HxWx3 image, got shape {image.shape}")
        if labels is not None and labels[i].shape != image.shape[:2]:
            raise ImageError(
                f"frame {i}: label shape {labels[i].shape} differs from image's {image.shape[:2]}"
            )

    lon, lat = erp_angles(erp_width, erp_height, fov_vertical_deg)
    lon_g, lat_g = np.meshgrid(lon, lat)
    rays = np.stack([np.cos(lat_g) * np.sin(lon_g), -np.sin(lat_g), np.cos(lat_g) * np.cos(lon_g)], axis=-1)
    rays = rays.reshape(-1, 3)

    n_pix = rays.shape[0]
    best_cos = np.full(n_pix, -np.inf)
    owner = np.full(n_pix, -1, dtype=np.intp)
    coord_u = np.zeros(n_pix)
    coord_v = np.zeros(n_pix)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        k = cams[i].scaled_to(w, h)
        cam = rays @ camera_rotation(float(yaws[i]), float(pitches[i]))  # world -> camera: R^T d
        z = cam[:, 2]
        front = z > 1e-9
        safe_z = np.where(front, z, 1.0)
        u = k.fx * cam[:, 0] / safe_z + k.cx
        v = k.fy * cam[:, 1] / safe_z + k.cy
        inside = front & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
        wins = inside & (z > best_cos)  # z is the cosine to this frame's optical axis
        best_cos[wins] = z[wins]
        owner[wins] = i
        coord_u[wins] = u[wins]
        coord_v[wins] = v[wins]

    fill_rgb = np.broadcast_to(np.asarray(fill, dtype=np.uint8), (3,))
    erp_image = np.empty((n_pix, 3), dtype=np.uint8)
    erp_image[:] = fill_rgb
    erp_label = None if labels is None else np.full(n_pix, IGNORE_INDEX, dtype=np.uint8)
    for i, image in enumerate(images):
        sel = np.flatnonzero(owner == i)
        if sel.size == 0:
            continue
        u, v = coord_u[sel], coord_v[sel]
        erp_image[sel] = np.clip(np.rint(_bilinear(image, u, v)), 0, 255).astype(np.uint8)
        if erp_label is not None:
            h, w = image.shape[:2]
            ui = np.clip(np.floor(u + 0.5).astype(np.intp), 0, w - 1)
            vi = np.clip(np.floor(v + 0.5).astype(np.intp), 0, h - 1)
            erp_label[sel] = labels[i][vi, ui]

    shape = (erp_height, erp_width)
    coverage = (owner >= 0).reshape(shape)
    out_label = None if erp_label is None else erp_label.reshape(shape)
    return erp_image.reshape(*shape, 3), out_label, coverage


def spread_yaws(
    n_frames: int,
    rng: np.random.Generator,
    slots: int | None = None,
    jitter_deg: float = 10.0,
) -> list[float]:
    """Yaws for ``n_frames`` frames: ``slots`` evenly spaced slots (default ``n_frames``) with a random
    common offset and a uniform per-frame jitter of ±``jitter_deg``, wrapped into [-180, 180)."""
    slots = max(slots or n_frames, n_frames)
    spacing = 360.0 / slots
    offset = rng.uniform(0.0, spacing)
    jitter = rng.uniform(-jitter_deg, jitter_deg, size=n_frames) if jitter_deg > 0 else np.zeros(n_frames)
    yaws = offset + spacing * np.arange(n_frames) + jitter
    return [float((y + 180.0) % 360.0 - 180.0) for y in yaws]
