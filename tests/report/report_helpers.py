"""Shared by the report tests (a module of its own: `conftest` is the top-level one)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A small ImageFolder tree (two classes, 40 generated 32x32 PNGs) for the
    command-line tests: decoded once, then read from the decode cache."""
    from PIL import Image

    from deconvviz.data.builtin import synthetic_images

    root = tmp_path_factory.mktemp("folder")
    images, _ = synthetic_images(40, seed=2)
    for i in range(40):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    return root
