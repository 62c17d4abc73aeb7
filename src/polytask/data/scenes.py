"""``scenes``: procedural ray-cast rooms with consistent segmentation, depth, normal and edge labels.

Each image looks from a pinhole camera at the origin (field of view ``fov`` degrees, looking down +z) into
a room: a floor (y = −1), a back wall (z ~ U(5, 8)) and 2–4 objects standing on the floor (spheres, boxes
turned about the vertical axis, upright cylinders). One analytic ray cast at twice the output resolution
gives, for every sub-pixel, the nearest hit's distance, surface normal, class and instance; every label
is derived from that one geometry, so the tasks share structure by construction:

- ``seg`` (5 classes: floor, wall, sphere, box, cylinder): the class; 255 (ignored) where the 2 x 2
  sub-pixels disagree;
- ``depth``: z-depth, mean over the sub-pixels; 0 (invalid) where they hit different instances;
- ``normals``: unit normal in camera coordinates; (0, 0, 0) (invalid) on silhouettes and on creases
  (sub-pixel normals more than 30° apart);
- ``edges``: 1 where an instance boundary or a crease (> 30° normal jump) passes inside the pixel or
  between it and its right or lower neighbour (at sub-pixel resolution), else 0.

The RGB image shades each instance's albedo with a random light (0.3 + 0.7 max(0, n·l)), a checker on the
floor, and Gaussian noise (σ = 0.02). Albedo is random and independent of the class unless
``class_colour`` > 0 (the probability that an object gets its class's colour), so the class has to be
read from shape. The default is a low-data regime (500 training images), where the geometric tasks
have most to give each other. Deterministic per ``seed``; 2,000 images of 32 x 32 take about 5 s; cached.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split, cached_arrays
from polytask.data.registry import register
from polytask.dense import DenseTask
from polytask.errors import PolytaskError

CLASSES = ("floor", "wall", "sphere", "box", "cylinder")
CLASS_COLOURS = {2: (0.85, 0.25, 0.2), 3: (0.25, 0.75, 0.3), 4: (0.25, 0.35, 0.85)}
IGNORE = 255
EPS = 1e-6
CREASE_DEGREES = 30.0


def scenes_tasks() -> list[DenseTask]:
    return [
        DenseTask("seg", "segmentation", len(CLASSES)),
        DenseTask("depth", "depth"),
        DenseTask("normals", "normals"),
        DenseTask("edges", "edges"),
    ]


# ------------------------------------------------------------------------------ ray-surface hits
def _sphere(d: np.ndarray, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance along unit rays d (P, 3) from the origin to a sphere, and the normals there."""
    oc = -centre
    b = d @ oc
    disc = b * b - (oc @ oc - radius**2)
    t = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    t = np.where(t > EPS, t, np.inf)
    n = (d * np.where(np.isfinite(t), t, 0)[:, None] - centre) / radius
    return t, n


def _box(d: np.ndarray, centre: np.ndarray, half: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Slab test against a box turned by ``angle`` about the vertical axis."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # box frame -> camera frame
    o = rot.T @ (-centre)
    dl = d @ rot  # rows: rot.T @ d
    dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    t1, t2 = (-half - o) / dl, (half - o) / dl
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_in, axis = near.max(1), near.argmax(1)
    t_out = far.min(1)
    t = np.where((t_out >= t_in) & (t_in > EPS), t_in, np.inf)
    n_local = np.zeros_like(d)
    n_local[np.arange(len(d)), axis] = -np.sign(dl[np.arange(len(d)), axis])
    return t, n_local @ rot.T


def _cylinder(d: np.ndarray, base: np.ndarray, radius: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """An upright cylinder with its base centre at ``base`` (on the floor), side and top cap."""
    ox, oz = -base[0], -base[2]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (d[:, 0] * ox + d[:, 2] * oz)
    c = ox**2 + oz**2 - radius**2
    disc = b * b - 4 * a * c
    t_side = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * np.maximum(a, 1e-12)), np.inf)
    y = d[:, 1] * np.where(np.isfinite(t_side), t_side, 0)
    t_side = np.where((t_side > EPS) & (y >= base[1]) & (y <= base[1] + height), t_side, np.inf)
    top = base[1] + height
    dy = np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
    t_cap = top / dy
    px, pz = d[:, 0] * t_cap - base[0], d[:, 2] * t_cap - base[2]
    t_cap = np.where((t_cap > EPS) & (px**2 + pz**2 <= radius**2), t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    p = d * np.where(np.isfinite(t), t, 0)[:, None]
    n_side = np.stack([(p[:, 0] - base[0]) / radius, np.zeros(len(d)), (p[:, 2] - base[2]) / radius], 1)
    n_cap = np.tile([0.0, 1.0, 0.0], (len(d), 1))
    return t, np.where((t_cap <= t_side)[:, None], n_cap, n_side)


# ------------------------------------------------------------------------------ one scene
def _rays(size: int, fov: float) -> np.ndarray:
    """Unit ray directions (size², 3), row-major from the top-left pixel, y up."""
    f = math.tan(math.radians(fov) / 2)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(coords * f, -coords * f)
    d = np.stack([u.ravel(), v.ravel(), np.ones(size * size)], 1)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _place_objects(rng: np.random.Generator, fov: float, wall: float) -> list[dict]:
    count = int(rng.integers(2, 5))
    f = math.tan(math.radians(fov) / 2)
    placed: list[dict] = []
    for _ in range(count * 20):
        if len(placed) == count:
            break
        cls = int(rng.integers(2, 5))
        z = rng.uniform(2.5, wall - 1.2)
        x = rng.uniform(-0.75, 0.75) * z * f
        radius = rng.uniform(0.35, 0.8)
        if any(math.hypot(x - o["x"], z - o["z"]) < radius + o["radius"] + 0.1 for o in placed):
            continue
        obj = {"cls": cls, "x": x, "z": z, "radius": radius}
        if cls == 2:
            obj["centre"] = np.array([x, -1 + radius, z])
        elif cls == 3:
            half = rng.uniform(0.3, 0.75, size=3)
            half[[0, 2]] = np.minimum(half[[0, 2]], radius / math.sqrt(2))
            obj.update(centre=np.array([x, -1 + half[1], z]), half=half, angle=rng.uniform(0, math.pi / 2))
        else:
            obj.update(base=np.array([x, -1.0, z]), height=rng.uniform(0.5, 1.8))
        placed.append(obj)
    return placed


def render(rng: np.random.Generator, size: int, fov: float, class_colour: float) -> dict[str, np.ndarray]:
    """One scene: image (3, S, S) float32 and the four label maps (see the module docstring)."""
    hi = 2 * size
    d = _rays(hi, fov)
    wall = rng.uniform(5.0, 8.0)
    # floor and wall
    t_floor = np.where(d[:, 1] < -EPS, -1.0 / np.minimum(d[:, 1], -EPS), np.inf)
    t_wall = wall / d[:, 2]
    depth_t = np.minimum(t_floor, t_wall)
    on_floor = t_floor <= t_wall
    normal = np.where(on_floor[:, None], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0])
    instance = np.where(on_floor, 0, 1)
    cls = instance.copy()
    albedo_of = [rng.uniform(0.3, 0.9, 3), rng.uniform(0.3, 0.9, 3)]
    for k, obj in enumerate(_place_objects(rng, fov, wall), start=2):
        if obj["cls"] == 2:
            t, n = _sphere(d, obj["centre"], obj["radius"])
        elif obj["cls"] == 3:
            t, n = _box(d, obj["centre"], obj["half"], obj["angle"])
        else:
            t, n = _cylinder(d, obj["base"], obj["radius"], obj["height"])
        closer = t < depth_t
        depth_t = np.where(closer, t, depth_t)
        normal = np.where(closer[:, None], n, normal)
        instance = np.where(closer, k, instance)
        cls = np.where(closer, obj["cls"], cls)
        if rng.random() < class_colour:
            albedo_of.append(np.clip(np.array(CLASS_COLOURS[obj["cls"]]) + rng.normal(0, 0.05, 3), 0, 1))
        else:
            albedo_of.append(rng.uniform(0.15, 1.0, 3))
    point = d * depth_t[:, None]
    albedo = np.stack(albedo_of)[instance]
    checker = (np.floor(point[:, 0] * 1.5) + np.floor(point[:, 2] * 1.5)) % 2
    albedo = np.where(on_floor[:, None] & (instance == 0)[:, None], albedo * (0.7 + 0.3 * checker[:, None]), albedo)
    light = np.array([rng.uniform(-1, 1), rng.uniform(0.5, 1.5), rng.uniform(-1.5, -0.5)])
    light /= np.linalg.norm(light)
    colour = albedo * (0.3 + 0.7 * np.maximum(0.0, normal @ light))[:, None]

    def blocks(a: np.ndarray) -> np.ndarray:  # (hi², ...) -> (S, S, 4, ...): the 2 x 2 sub-pixels
        a = a.reshape(size, 2, size, 2, *a.shape[1:])
        return np.moveaxis(a, 2, 1).reshape(size, size, 4, *a.shape[4:])

    inst_b, cls_b, norm_b = blocks(instance), blocks(cls), blocks(normal)
    z_b = blocks(depth_t * d[:, 2])
    one_instance = (inst_b == inst_b[..., :1]).all(-1)
    one_class = (cls_b == cls_b[..., :1]).all(-1)
    cosines = np.einsum("hwic,hwjc->hwij", norm_b, norm_b)
    crease = cosines.min((-1, -2)) < math.cos(math.radians(CREASE_DEGREES))
    mean_normal = norm_b.mean(2)
    mean_normal /= np.maximum(np.linalg.norm(mean_normal, axis=-1, keepdims=True), 1e-12)
    smooth = one_instance & ~crease
    # edges: a sub-pixel whose right or lower neighbour is another instance or turns by > 30°, so that
    # boundaries between two pixels count as well as boundaries inside one
    inst_hi, norm_hi = instance.reshape(hi, hi), normal.reshape(hi, hi, 3)
    cos_limit = math.cos(math.radians(CREASE_DEGREES))
    boundary = np.zeros((hi, hi), dtype=bool)
    boundary[:, :-1] |= (inst_hi[:, :-1] != inst_hi[:, 1:]) | ((norm_hi[:, :-1] * norm_hi[:, 1:]).sum(-1) < cos_limit)
    boundary[:-1, :] |= (inst_hi[:-1, :] != inst_hi[1:, :]) | ((norm_hi[:-1, :] * norm_hi[1:, :]).sum(-1) < cos_limit)
    edges = boundary.reshape(size, 2, size, 2).any((1, 3)) | ~smooth
    image = blocks(colour).mean(2) + rng.normal(0, 0.02, (size, size, 3))
    return {
        "image": np.clip(image, 0, 1).transpose(2, 0, 1).astype(np.float32),
        "seg": np.where(one_class, cls_b[..., 0], IGNORE).astype(np.uint8),
        "depth": np.where(one_instance, z_b.mean(2), 0.0).astype(np.float32),
        "normals": np.where(smooth[..., None], mean_normal, 0.0).transpose(2, 0, 1).astype(np.float32),
        "edges": edges.astype(np.uint8),
    }


def build_arrays(n_train: int, n_val: int, n_test: int, size: int, fov: float, class_colour: float, seed: int):
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        scenes = [render(rng, size, fov, class_colour) for _ in range(n)]
        for key in scenes[0]:
            out[f"{split}_{key}"] = np.stack([s[key] for s in scenes])
    return out


def _load_or_build(config: dict) -> dict[str, np.ndarray]:
    return cached_arrays("scenes", config, build_arrays)


def split_from_arrays(arrays: dict[str, np.ndarray], split: str) -> Split:
    return Split(
        torch.from_numpy(arrays[f"{split}_image"]),
        {
            "seg": torch.from_numpy(arrays[f"{split}_seg"].astype(np.int64)),
            "depth": torch.from_numpy(arrays[f"{split}_depth"]),
            "normals": torch.from_numpy(arrays[f"{split}_normals"]),
            "edges": torch.from_numpy(arrays[f"{split}_edges"].astype(np.int64)),
        },
    )


@register("scenes", "Procedural ray-cast rooms (RGB): segmentation, depth, surface normals, edges")
def scenes(
    n_train: int = 500,
    n_val: int = 250,
    n_test: int = 250,
    size: int = 32,
    fov: float = 60.0,
    class_colour: float = 0.0,
    seed: int = 0,
) -> MultiTaskData:
    if min(n_train, n_val, n_test) < 1:
        raise PolytaskError("scenes: n_train, n_val and n_test must be >= 1")
    if size < 8:
        raise PolytaskError(f"scenes: size must be >= 8 pixels, got {size}")
    if not 10.0 <= fov <= 120.0:
        raise PolytaskError(f"scenes: fov must be in [10, 120] degrees, got {fov}")
    if not 0.0 <= class_colour <= 1.0:
        raise PolytaskError(f"scenes: class_colour is a probability in [0, 1], got {class_colour}")
    config = dict(
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        size=size,
        fov=float(fov),
        class_colour=float(class_colour),
        seed=seed,
    )
    arrays = _load_or_build(config)
    return MultiTaskData(
        "scenes",
        scenes_tasks(),
        (3, size, size),
        split_from_arrays(arrays, "train"),
        split_from_arrays(arrays, "val"),
        split_from_arrays(arrays, "test"),
        # 12 epochs suffice at this size and keep `compare --archs all --seeds 3` within 30 minutes on 2 cores
        {"config": config, "classes": list(CLASSES), "train_defaults": {"epochs": 12}},
    )
