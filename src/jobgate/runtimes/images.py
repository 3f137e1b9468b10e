"""Which image an executor's ``image`` names on this site: the image map and local archives.

``JOBGATE_IMAGE_MAP`` maps a TES image name to a local one (``alpine=localhost/busybox``) or,
with a ``dir:`` prefix, to an unpacked root directory (``alpine=dir:/srv/roots/alpine``);
``*`` maps every image not named otherwise (``*=dir:/``: the host's root, read-only).
``JOBGATE_IMAGE_DIR`` holds image archives for air-gapped sites, found by file name: the
image reference with ``/``, ``:`` and ``@`` replaced by ``_`` plus a suffix the runtime
loads (``localhost_busybox_latest.tar``, ``alpine.sif``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobgate.runtimes.argv import DEFAULT_KEY as DEFAULT_KEY
from jobgate.runtimes.argv import DIR_PREFIX as DIR_PREFIX
from jobgate.runtimes.argv import mapped_image

DEFAULT_REGISTRY = "docker.io"
_UNSAFE = re.compile(r"[/:@]")


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where an executor's image comes from: an engine reference or an unpacked root."""

    requested: str
    """The image as the task named it."""
    ref: str
    """What the engine is asked for (after the image map)."""
    rootfs: Path | None = None
    """An unpacked root directory (image map value ``dir:/path``) instead of an image."""


class ImageCatalog:
    """Resolves task image names with the site's image map and archive directory."""

    def __init__(self, image_map: Mapping[str, str] | None = None, image_dir: Path | None = None):
        self.image_map = dict(image_map or {})
        self.image_dir = image_dir

    def resolve(self, image: str) -> ImageSource:
        """The source of ``image``: its own entry in the map, else the map's ``*`` entry
        (every other image), else the image itself."""
        mapped = mapped_image(self.image_map, image)
        if mapped.startswith(DIR_PREFIX):
            return ImageSource(image, mapped, Path(mapped.removeprefix(DIR_PREFIX)))
        return ImageSource(image, mapped)

    def archive(self, source: ImageSource, suffixes: Iterable[str]) -> Path | None:
        """The archive in the image directory for ``source``, if there is one."""
        if self.image_dir is None:
            return None
        suffixes = tuple(suffixes)
        for stem in archive_stems(source.requested, source.ref):
            for suffix in suffixes:
                candidate = self.image_dir / f"{stem}{suffix}"
                if candidate.is_file():
                    return candidate
        return None


def archive_stems(*names: str) -> list[str]:
    """File stems an archive of any of ``names`` may have, most specific first."""
    stems: list[str] = []
    for name in names:
        variants = [name]
        if has_tag(name):
            if name.endswith(":latest"):
                variants.append(name.removesuffix(":latest"))
        else:
            variants.append(f"{name}:latest")
        for v in variants:
            stem = _UNSAFE.sub("_", v)
            if stem not in stems:
                stems.append(stem)
    return stems


def has_tag(ref: str) -> bool:
    last = ref.rsplit("/", 1)[-1]
    return ":" in last or "@" in ref


def qualify(ref: str) -> str:
    """A fully qualified reference, as Docker reads short names (``alpine`` →
    ``docker.io/library/alpine``); podman refuses short names without a search registry."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return ref
    if not sep:
        return f"{DEFAULT_REGISTRY}/library/{ref}"
    return f"{DEFAULT_REGISTRY}/{ref}"


def parse_image_map(value: str) -> dict[str, str]:
    """``name=image,name2=dir:/root`` → a dict; raises ValueError naming bad entries."""
    pairs = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0].strip()]
    if bad:
        raise ValueError(f"expected NAME=IMAGE pairs, got {bad}")
    out = {}
    for pair in pairs:
        name, image = (s.strip() for s in pair.split("=", 1))
        if not image or image == DIR_PREFIX:
            raise ValueError(f"image map entry {name!r} names no image")
        out[name] = image
    return out
