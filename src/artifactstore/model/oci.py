"""Lossless projection of a manifest onto an OCI image manifest (image-spec v1.1).

The same package can be pulled by OCI tools (oras, crane, skopeo), and an OCI
manifest produced here converts back to exactly the manifest it came from:
``from_oci(*to_oci(m)) == m``. The mapping follows the image-spec "Guidelines
for Artifact Usage":

========================  ====================================================
OCI field                  artifact-store source
========================  ====================================================
``artifactType``           ``application/vnd.artifactstore.package.v1``
``config``                 the config blob below, media type
                           ``application/vnd.artifactstore.metadata.v1+json``
``layers[i]``              ``files[i]``: ``mediaType`` = media_type, ``digest``
                           = the SHA-256 (what OCI registries address by),
                           ``size``, annotations
                           ``org.opencontainers.image.title`` = path and
                           ``vnd.artifactstore.blake3`` = the BLAKE3 digest
``layers`` (no files)      one OCI empty descriptor (``{}``, 2 bytes), as the
                           spec suggests for artifacts without layers
``annotations``            the package annotations, plus
                           ``org.opencontainers.image.created`` = created and
                           ``vnd.artifactstore.{namespace,name,version,producer}``
========================  ====================================================

The config blob is the canonical JSON (sorted keys, compact, UTF-8) of
``{"metadata": <metadata>, "variant": <variant or null>}``; its descriptor
carries its SHA-256 and size. Canonical rendering makes the blob, and so the
OCI manifest's digest, a pure function of the package.

``from_oci`` is strict: any key, value or layout that ``to_oci`` would not
have produced is refused with :class:`InvalidManifest`, because accepting it
would silently drop information on the way back.
"""

from __future__ import annotations

import hashlib
from typing import Final

from artifactstore.errors import InvalidInput, InvalidManifest
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.jsonio import canonical_json_dumps, strict_json_loads
from artifactstore.model.manifest import (
    CREATED_ANNOTATION,
    MAX_DEPTH,
    RESERVED_ANNOTATION_PREFIX,
    FileEntry,
    Manifest,
)
from artifactstore.model.paths import PackagePath

__all__ = [
    "ARTIFACT_TYPE",
    "BLAKE3_ANNOTATION",
    "CONFIG_MEDIA_TYPE",
    "EMPTY_DESCRIPTOR",
    "OCI_MANIFEST_MEDIA_TYPE",
    "TITLE_ANNOTATION",
    "from_oci",
    "to_oci",
]

OCI_MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE: Final = "application/vnd.artifactstore.package.v1"
CONFIG_MEDIA_TYPE: Final = "application/vnd.artifactstore.metadata.v1+json"
TITLE_ANNOTATION: Final = "org.opencontainers.image.title"
BLAKE3_ANNOTATION: Final = RESERVED_ANNOTATION_PREFIX + "blake3"
EMPTY_DESCRIPTOR: Final[dict[str, object]] = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
"""The image-spec empty descriptor (the blob is ``{}``); the single layer of an empty package."""

_PACKAGE_ANNOTATIONS: Final = {
    field: RESERVED_ANNOTATION_PREFIX + field
    for field in ("namespace", "name", "version", "producer")
}
_MANIFEST_KEYS = frozenset(
    {"schemaVersion", "mediaType", "artifactType", "config", "layers", "annotations"}
)
_DESCRIPTOR_KEYS = frozenset({"mediaType", "digest", "size"})
_LAYER_KEYS = _DESCRIPTOR_KEYS | {"annotations"}
_LAYER_ANNOTATIONS = frozenset({TITLE_ANNOTATION, BLAKE3_ANNOTATION})
_CONFIG_KEYS = frozenset({"metadata", "variant"})


def _config_bytes(manifest: Manifest) -> bytes:
    document = {"metadata": manifest.metadata, "variant": manifest.variant}
    return canonical_json_dumps(document).encode("utf-8")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def to_oci(m: Manifest) -> tuple[dict[str, object], bytes]:
    """Project ``m`` onto an OCI image manifest; return it and the config blob's bytes."""
    config = _config_bytes(m)
    layers: list[object] = [
        {
            "mediaType": entry.media_type,
            "digest": str(entry.sha256),
            "size": entry.size,
            "annotations": {
                TITLE_ANNOTATION: entry.path.value,
                BLAKE3_ANNOTATION: str(entry.blake3),
            },
        }
        for entry in m.files
    ] or [dict(EMPTY_DESCRIPTOR)]
    annotations = dict(m.annotations)
    annotations[CREATED_ANNOTATION] = m.created
    annotations[_PACKAGE_ANNOTATIONS["namespace"]] = m.namespace.value
    annotations[_PACKAGE_ANNOTATIONS["name"]] = m.name.value
    annotations[_PACKAGE_ANNOTATIONS["version"]] = m.version.value
    annotations[_PACKAGE_ANNOTATIONS["producer"]] = m.producer
    oci: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": _sha256(config), "size": len(config)},
        "layers": layers,
        "annotations": annotations,
    }
    return oci, config


# --- the way back ----------------------------------------------------------------------


def _map(value: object, where: str, keys: frozenset[str] | None = None) -> dict[str, object]:
    if type(value) is not dict:
        raise InvalidManifest(f"OCI manifest field {where} must be an object")
    if keys is not None and value.keys() != keys:
        expected = ", ".join(sorted(keys))
        raise InvalidManifest(f"OCI manifest field {where} must have exactly the keys {expected}")
    return value


def _text(value: object, where: str) -> str:
    if type(value) is not str:
        raise InvalidManifest(f"OCI manifest field {where} must be a string")
    return value


def _expect(value: object, expected: object, where: str) -> None:
    if type(value) is not type(expected) or value != expected:
        raise InvalidManifest(f"OCI manifest field {where} must be {expected!r}")


def _size(value: object, where: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidManifest(f"OCI manifest field {where} must be a non-negative integer")
    return value


def _file(layer: object, index: int) -> FileEntry:
    where = f"layers[{index}]"
    descriptor = _map(layer, where, _LAYER_KEYS)
    notes = _map(descriptor["annotations"], f"{where}.annotations", _LAYER_ANNOTATIONS)
    sha256 = Digest.parse(_text(descriptor["digest"], f"{where}.digest"))
    blake3 = Digest.parse(_text(notes[BLAKE3_ANNOTATION], f"{where}.annotations"))
    return FileEntry(
        path=PackagePath(_text(notes[TITLE_ANNOTATION], f"{where}.annotations")),
        size=_size(descriptor["size"], f"{where}.size"),
        media_type=_text(descriptor["mediaType"], f"{where}.mediaType"),
        blake3=blake3,
        sha256=sha256,
    )


def _from_oci(oci: object, config: bytes) -> Manifest:
    root = _map(oci, "(root)", _MANIFEST_KEYS)
    _expect(root["schemaVersion"], 2, "schemaVersion")
    _expect(root["mediaType"], OCI_MANIFEST_MEDIA_TYPE, "mediaType")
    _expect(root["artifactType"], ARTIFACT_TYPE, "artifactType")

    descriptor = _map(root["config"], "config", _DESCRIPTOR_KEYS)
    _expect(descriptor["mediaType"], CONFIG_MEDIA_TYPE, "config.mediaType")
    _expect(descriptor["digest"], _sha256(config), "config.digest (the config blob's SHA-256)")
    _expect(descriptor["size"], len(config), "config.size (the config blob's length)")
    document = _map(strict_json_loads(config, max_depth=MAX_DEPTH), "config blob", _CONFIG_KEYS)
    if canonical_json_dumps(document).encode("utf-8") != config:
        raise InvalidManifest("OCI config blob is not in canonical JSON form")

    layers = root["layers"]
    if type(layers) is not list or not layers:
        raise InvalidManifest("OCI manifest field layers must be a non-empty array")
    if layers == [EMPTY_DESCRIPTOR] and all(
        type(v) is type(EMPTY_DESCRIPTOR[k]) for k, v in layers[0].items()
    ):
        files: tuple[FileEntry, ...] = ()
    else:
        files = tuple(_file(layer, index) for index, layer in enumerate(layers))

    annotations = {
        _text(key, "annotations key"): _text(value, f"annotations.{str(key)[:80]}")
        for key, value in _map(root["annotations"], "annotations").items()
    }
    own = {field: annotations.pop(key, None) for field, key in _PACKAGE_ANNOTATIONS.items()}
    created = annotations.pop(CREATED_ANNOTATION, None)
    missing = sorted(k for k, v in own.items() if v is None) + (
        ["created"] if created is None else []
    )
    if missing:
        raise InvalidManifest(f"OCI manifest annotations lack {', '.join(missing)}")
    unknown = sorted(k for k in annotations if k.startswith(RESERVED_ANNOTATION_PREFIX))
    if unknown:
        raise InvalidManifest(f"OCI manifest has unknown reserved annotations {unknown[:10]}")

    variant = document["variant"]
    metadata = document["metadata"]
    if variant is not None and type(variant) is not str:
        raise InvalidManifest("OCI config field variant must be a string or null")
    if type(metadata) is not dict:
        raise InvalidManifest("OCI config field metadata must be an object")
    return Manifest(
        namespace=Namespace(own["namespace"] or ""),
        name=PackageName(own["name"] or ""),
        version=Version(own["version"] or ""),
        files=files,
        variant=variant,
        metadata=metadata,
        annotations=annotations,
        created=created or "",
        producer=own["producer"] or "",
    )


def from_oci(oci: dict[str, object], config: bytes) -> Manifest:
    """Rebuild the manifest that :func:`to_oci` projected; the exact inverse.

    Raises :class:`InvalidManifest` (naming the field) for anything ``to_oci``
    would not have produced: extra or missing keys, a config blob whose digest,
    size or canonical form does not match, unknown ``vnd.artifactstore.*``
    annotations, or invalid names, paths and digests.
    """
    try:
        manifest = _from_oci(oci, bytes(config))
    except InvalidManifest:
        raise
    except InvalidInput as exc:  # names, paths and digests carry their own codes
        raise InvalidManifest(f"OCI manifest: {exc.detail}") from None
    if to_oci(manifest) != (oci, config):  # belt and braces: the projection must be exact
        raise InvalidManifest("OCI manifest is not the canonical projection of a package")
    return manifest
