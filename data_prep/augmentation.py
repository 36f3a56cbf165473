"""Each dataset's default augmentation policy, and the offline copies `--augment_copies` makes with a policy
(`random_transform`, and the `AugmentCopies` DoFn of the write graph).

data_prep chooses defaults that fit the data (no flips for digits; flips, rotation
and zoom for photos) and records them in metadata.json (schema.AugmentationPolicy);
the trainer applies the recorded policy to the training split only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from PIL import Image

from data_prep import example_proto, images, schema
from data_prep.examples import Example, ExampleInfo, Pointer
from data_prep.options import UserError
from data_prep.results import METRICS_NAMESPACE
from data_prep.schema import AugmentationPolicy
from data_prep.spill import read_spilled

# Photos of animals and objects: mirror-symmetric classes, framing varies.
PHOTO_POLICY = AugmentationPolicy(horizontal_flip=True, rotation=0.1, zoom=0.2, translation=0.1)
# Digits: a flip or a large rotation changes the meaning (2/5, 6/9); small shifts and zooms only.
DIGIT_POLICY = AugmentationPolicy(rotation=0.03, zoom=0.1, translation=0.1)
# CIFAR's standard recipe: flips and small shifts.
SMALL_PHOTO_POLICY = AugmentationPolicy(horizontal_flip=True, translation=0.125)

DEFAULT_POLICIES: dict[str, AugmentationPolicy] = {
    "catsdogs": PHOTO_POLICY,
    "imagefolder": PHOTO_POLICY,
    "mnist": DIGIT_POLICY,
    "fashion_mnist": AugmentationPolicy(horizontal_flip=True, translation=0.1),
    "cifar10": SMALL_PHOTO_POLICY,
    "cifar100": SMALL_PHOTO_POLICY,
}


_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def policy_for(dataset: str, overrides: Sequence[str] = ()) -> AugmentationPolicy:
    """The dataset's default policy with `name=value` overrides (`--augmentation`)."""
    default = DEFAULT_POLICIES[dataset]
    names = [f.name for f in dataclasses.fields(default)]
    values: dict[str, Any] = {}
    for item in overrides:
        name, _, text = item.partition("=")
        if name not in names:
            raise UserError(f"--augmentation={item}: expected name=value with a name of {names}")
        if isinstance(getattr(default, name), bool):
            if text.lower() not in _BOOLEANS:
                raise UserError(f"--augmentation={item}: expected true or false")
            values[name] = _BOOLEANS[text.lower()]
        else:
            try:
                values[name] = float(text)
            except ValueError:
                raise UserError(f"--augmentation={item}: expected a number") from None
    try:
        return default.replace(**values)
    except ValueError as e:
        raise UserError(f"--augmentation: {e}") from None


def random_transform(
    pixels: np.ndarray, policy: AugmentationPolicy, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """One offline-augmented copy of an HxWxC uint8 image and the parameters that made it.

    Rotation, zoom and translation are one affine map about the centre (constant black fill),
    as keras.layers.Random* would draw them; the parameters are recorded with the copy.
    """
    height, width = pixels.shape[:2]
    params = {
        "horizontal_flip": bool(policy.horizontal_flip and rng.random() < 0.5),
        "vertical_flip": bool(policy.vertical_flip and rng.random() < 0.5),
        "rotation_degrees": float(rng.uniform(-policy.rotation, policy.rotation) * 360),
        "zoom": float(1 + rng.uniform(-policy.zoom, policy.zoom)),
        "translate_x": float(rng.uniform(-policy.translation, policy.translation) * width),
        "translate_y": float(rng.uniform(-policy.translation, policy.translation) * height),
        "contrast": float(1 + rng.uniform(-policy.contrast, policy.contrast)),
    }
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    if params["horizontal_flip"]:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if params["vertical_flip"]:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    # Inverse map (output -> input) for PIL: undo translation, then rotation and zoom about the centre.
    angle = math.radians(params["rotation_degrees"])
    cos, sin = math.cos(angle) / params["zoom"], math.sin(angle) / params["zoom"]
    cx, cy = width / 2, height / 2
    ox, oy = cx + params["translate_x"], cy + params["translate_y"]
    matrix = (cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy)
    image = image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)
    out = np.asarray(image).astype(np.float32)
    if params["contrast"] != 1.0:
        mean = out.mean(axis=(0, 1), keepdims=True)
        out = (out - mean) * params["contrast"] + mean
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return (out[:, :, np.newaxis] if out.ndim == 2 else out), params


class AugmentCopies(beam.DoFn):
    """K offline-augmented copies of a training example, deterministic from (seed, key, copy index)."""

    def __init__(self, copies: int, seed: int, policy: schema.AugmentationPolicy, image_options: images.ImageOptions):
        self._copies, self._seed, self._policy, self._image_options = copies, seed, policy, image_options

    def process(self, pointer: Pointer) -> Iterable[Example]:
        record = read_spilled([pointer])[(pointer.spill_path, pointer.offset)]
        feature = example_proto.Example.FromString(record).features.feature
        coarse = feature[schema.COARSE_LABEL].int64_list.value if schema.COARSE_LABEL in feature else None
        source = pointer.info
        pixels = images.decode(
            feature[schema.IMAGE].bytes_list.value[0], dataclasses.replace(self._image_options, resize_policy="none")
        ).pixels
        for copy in range(self._copies):
            rng = np.random.default_rng([self._seed, int(source.key[:16], 16), copy])
            augmented, params = random_transform(pixels, self._policy, rng)
            key = hashlib.sha256(f"{source.key}:augment:{self._seed}:{copy}".encode()).hexdigest()
            filename = f"{source.filename}#augment{copy}"
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "augmented").inc()
            yield Example(
                ExampleInfo(
                    key=key,
                    filename=filename,
                    label=source.label,
                    split=source.split,
                    dedupe_key=key,
                    num_pixels=source.num_pixels,
                    moments=source.moments,
                    source_key=source.key,
                ),
                schema.serialize_example(
                    images.encode(augmented, self._image_options),
                    filename,
                    key,
                    source.label,
                    coarse_label=coarse[0] if coarse else None,
                    augment_source_key=source.key,
                    augment_params=params,
                ),
            )
