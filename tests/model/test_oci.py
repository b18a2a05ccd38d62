"""The OCI projection: valid per the image-spec schemas, and exactly invertible."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from artifactstore.errors import InvalidManifest
from artifactstore.model.manifest import Manifest
from artifactstore.model.oci import (
    ARTIFACT_TYPE,
    BLAKE3_ANNOTATION,
    CONFIG_MEDIA_TYPE,
    EMPTY_DESCRIPTOR,
    OCI_MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    from_oci,
    to_oci,
)
from tests.model.test_manifest import JSON_VALUES, entry, manifests, sample

SCHEMAS = Path(__file__).parent / "oci_schemas"
DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


def _load(uri: str) -> Resource:
    # Draft-04 ids and relative $refs resolve to several base URIs; the file name decides.
    name = uri.rsplit("/", 1)[-1]
    contents = json.loads((SCHEMAS / name).read_text("utf-8"))
    return Resource.from_contents(contents, default_specification=DRAFT4)


_REGISTRY: Registry = Registry(retrieve=_load)  # type: ignore[call-arg]
_VALIDATOR = Draft4Validator(
    json.loads((SCHEMAS / "image-manifest-schema.json").read_text("utf-8")), registry=_REGISTRY
)


def _check_descriptor(descriptor: dict[str, object]) -> None:
    digest, size, media = descriptor["digest"], descriptor["size"], descriptor["mediaType"]
    assert isinstance(digest, str) and DIGEST.match(digest)
    algorithm, _, encoded = digest.partition(":")
    assert algorithm == "sha256" and re.fullmatch("[a-f0-9]{64}", encoded)
    assert isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= 2**63 - 1
    assert isinstance(media, str) and MEDIA_TYPE.match(media)


def check_oci(oci: dict[str, object], config: bytes) -> None:
    _VALIDATOR.validate(oci)
    assert oci["schemaVersion"] == 2
    assert oci["mediaType"] == OCI_MANIFEST_MEDIA_TYPE
    assert oci["artifactType"] == ARTIFACT_TYPE
    descriptor = oci["config"]
    assert isinstance(descriptor, dict)
    _check_descriptor(descriptor)
    assert descriptor["mediaType"] == CONFIG_MEDIA_TYPE
    assert descriptor["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert descriptor["size"] == len(config)
    layers = oci["layers"]
    assert isinstance(layers, list) and layers
    for layer in layers:
        _check_descriptor(layer)
    annotations = oci["annotations"]
    assert isinstance(annotations, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())


# --- schema and field rules -------------------------------------------------------------------


def test_the_schema_copies_catch_bad_manifests() -> None:
    oci, _ = to_oci(sample())
    for bad in (
        {**oci, "schemaVersion": 1},
        {**oci, "layers": []},
        {**oci, "mediaType": "not a media type"},
        {**oci, "config": {**oci["config"], "digest": "sha256:not hex!"}},  # type: ignore[dict-item]
        {**oci, "config": {**oci["config"], "size": -1}},  # type: ignore[dict-item]
        {**oci, "annotations": {"k": 1}},
    ):
        assert not _VALIDATOR.is_valid(bad)


@given(manifests)
def test_to_oci_is_a_valid_oci_image_manifest(m: Manifest) -> None:
    oci, config = to_oci(m)
    check_oci(oci, config)
    json.dumps(oci)  # plain JSON types only


@given(manifests)
def test_from_oci_inverts_to_oci(m: Manifest) -> None:
    oci, config = to_oci(m)
    back = from_oci(oci, config)
    assert back == m
    assert back.to_cbor() == m.to_cbor()
    assert to_oci(back) == (oci, config)
    # The OCI manifest survives a trip through JSON text, as it does over HTTP.
    assert from_oci(json.loads(json.dumps(oci)), config) == m


def test_layout_of_a_package() -> None:
    m = sample()
    oci, config = to_oci(m)
    assert json.loads(config) == {"metadata": m.metadata, "variant": "ci.build.v1"}
    assert oci["layers"] == [
        {
            "mediaType": f.media_type,
            "digest": str(f.sha256),
            "size": f.size,
            "annotations": {TITLE_ANNOTATION: f.path.value, BLAKE3_ANNOTATION: str(f.blake3)},
        }
        for f in m.files
    ]
    assert oci["annotations"] == {
        "org.opencontainers.image.source": "https://example.test/repo",
        "org.opencontainers.image.created": "2024-05-01T12:00:00Z",
        "vnd.artifactstore.namespace": "ci",
        "vnd.artifactstore.name": "app",
        "vnd.artifactstore.version": "1.4.2",
        "vnd.artifactstore.producer": "artifactstore/0.1",
    }


def test_empty_package_uses_the_oci_empty_descriptor() -> None:
    m = sample(files=[])
    oci, config = to_oci(m)
    check_oci(oci, config)
    assert oci["layers"] == [EMPTY_DESCRIPTOR]
    assert EMPTY_DESCRIPTOR["digest"] == "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert from_oci(oci, config) == m


def test_to_oci_does_not_share_state_between_calls() -> None:
    oci, _ = to_oci(sample(files=[]))
    oci["layers"][0]["size"] = 99  # type: ignore[index]
    assert EMPTY_DESCRIPTOR["size"] == 2
    assert to_oci(sample(files=[]))[0]["layers"] == [EMPTY_DESCRIPTOR]


# --- refusals -----------------------------------------------------------------------------------


def _mutate(oci: dict[str, object], path: str, value: object) -> None:
    """Set (or with _DELETE remove) the item at a '/'-separated path of keys and indexes."""
    *parents, last = path.split("/")
    target: Any = oci
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if value is _DELETE:
        del target[key]
    else:
        target[key] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("schemaVersion", 1),
        ("schemaVersion", "2"),
        ("schemaVersion", 2.0),
        ("mediaType", "application/vnd.docker.distribution.manifest.v2+json"),
        ("artifactType", "application/vnd.example+type"),
        ("artifactType", _DELETE),
        ("subject", dict(EMPTY_DESCRIPTOR)),
        ("config/mediaType", "application/vnd.oci.empty.v1+json"),
        ("config/digest", "sha256:" + "0" * 64),
        ("config/size", 1),
        ("config/urls", []),
        ("layers", []),
        ("layers/0/annotations/org.opencontainers.image.title", "../escape"),
        ("layers/0/annotations/org.opencontainers.image.title", "dist/app.whl"),
        ("layers/0/annotations/vnd.artifactstore.blake3", "sha256:" + "5" * 64),
        ("layers/0/annotations/vnd.artifactstore.blake3", _DELETE),
        ("layers/0/annotations/extra", "x"),
        ("layers/0/digest", "sha512:" + "0" * 128),
        ("layers/0/digest", "blake3:" + "0" * 64),
        ("layers/0/size", -1),
        ("layers/0/size", True),
        ("layers/0/mediaType", "text"),
        ("layers/0/data", "e30="),
        ("layers/1", "not a descriptor"),
        ("annotations/vnd.artifactstore.name", _DELETE),
        ("annotations/vnd.artifactstore.namespace", "Bad"),
        ("annotations/vnd.artifactstore.extra", "x"),
        ("annotations/org.opencontainers.image.created", _DELETE),
        ("annotations/org.opencontainers.image.created", "yesterday"),
        ("annotations/k", 1),
        ("annotations", _DELETE),
        ("config", _DELETE),
    ],
)
def test_from_oci_refuses_what_to_oci_would_not_produce(path: str, value: object) -> None:
    oci, config = to_oci(sample())
    bad = copy.deepcopy(oci)
    _mutate(bad, path, value)
    with pytest.raises(InvalidManifest):
        from_oci(bad, config)


def test_from_oci_refuses_unsorted_layers() -> None:
    oci, config = to_oci(sample())
    layers = oci["layers"]
    assert isinstance(layers, list)
    with pytest.raises(InvalidManifest, match="sorted"):
        from_oci({**oci, "layers": layers[::-1]}, config)


def _with_config(oci: dict[str, object], config: bytes) -> dict[str, object]:
    descriptor = {
        "mediaType": CONFIG_MEDIA_TYPE,
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        "size": len(config),
    }
    return {**oci, "config": descriptor}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (b'{"metadata": {}, "variant": null}', "canonical"),
        (b'{"metadata":{},"variant":null,"x":1}', "exactly the keys"),
        (b'{"metadata":{}}', "exactly the keys"),
        (b'{"metadata":[],"variant":null}', "metadata must be an object"),
        (b'{"metadata":{},"variant":1}', "variant must be a string"),
        (b'{"metadata":{},"variant":"Bad"}', "variant"),
        (b'{"metadata":{"a":1,"a":2},"variant":null}', "duplicate"),
        (b'{"metadata":{"a":NaN},"variant":null}', "NaN"),
        (b"\xff", "UTF-8"),
    ],
)
def test_from_oci_refuses_bad_config_blobs(config: bytes, match: str) -> None:
    oci, _ = to_oci(sample())
    with pytest.raises(InvalidManifest, match=match):
        from_oci(_with_config(oci, config), config)


def test_from_oci_checks_config_bytes_against_the_descriptor() -> None:
    oci, config = to_oci(sample())
    with pytest.raises(InvalidManifest, match=r"config\.digest"):
        from_oci(oci, config.replace(b"main", b"mainx"))


def test_from_oci_refuses_non_dict() -> None:
    with pytest.raises(InvalidManifest):
        from_oci([], b"{}")  # type: ignore[arg-type]
    oci, config = to_oci(sample())
    with pytest.raises(InvalidManifest, match="annotations key"):
        from_oci({**oci, "annotations": {1: "x"}}, config)


_OCI_KEYS = ["schemaVersion", "mediaType", "artifactType", "config", "layers", "annotations"]


@given(st.dictionaries(st.sampled_from(_OCI_KEYS), JSON_VALUES), st.binary(max_size=40))
def test_from_oci_on_arbitrary_input_raises_only_invalid_manifest(
    oci: dict[str, object], config: bytes
) -> None:
    with pytest.raises(InvalidManifest):
        from_oci(oci, config)


def test_unicode_titles_survive() -> None:
    m = sample(files=[entry("données/日本.txt"), entry("ß")])
    assert from_oci(*to_oci(m)) == m
