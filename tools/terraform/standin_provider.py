"""A schema-only stand-in for a provider, for offline ``validate`` and ``test``.

It speaks the Terraform plugin protocol (version 6, through PyPI ``tf``) and answers
schema and validation calls from a schema file in ``terraform providers schema -json``
form: ``google-provider-schema.json`` for hashicorp/google, ``time-provider-schema.json``
for hashicorp/time (the provider address is the file's). It cannot create, read or change
anything: ``terraform test`` runs it as a ``mock_provider``, which uses only its schema and
validation and makes up the computed values itself.

Runs in its own virtualenv (``tf`` pulls in grpcio and protobuf, which the project does
not need); ``tools.terraform.toolchain`` installs that and writes the launcher Terraform
starts through ``dev_overrides``:

    python standin_provider.py [SCHEMA_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tf import runner  # type: ignore[import-not-found]
from tf.gen import tfplugin_pb2 as pb  # type: ignore[import-not-found]
from tf.iface import DataSource, Provider, Resource  # type: ignore[import-not-found]
from tf.schema import Attribute, Block, NestedBlock, NestMode, Schema  # type: ignore[import-not-found]
from tf.types import TfType  # type: ignore[import-not-found]

DEFAULT_SCHEMA = Path(__file__).with_name("google-provider-schema.json")
SCHEMA_ONLY = "the provider stand-in only knows schemas; it cannot create, read or change anything"

_NESTING = {
    "single": pb.Schema.NestedBlock.NestingMode.SINGLE,
    "list": pb.Schema.NestedBlock.NestingMode.LIST,
    "set": pb.Schema.NestedBlock.NestingMode.SET,
    "map": pb.Schema.NestedBlock.NestingMode.MAP,
    "group": pb.Schema.NestedBlock.NestingMode.GROUP,
}


class CtyType(TfType):  # type: ignore[misc]
    """Any Terraform type, given as its JSON form (``"string"``, ``["list", "string"]``, ...)."""

    def __init__(self, cty: Any) -> None:
        self._json = json.dumps(cty, separators=(",", ":")).encode()

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, value: Any) -> Any:
        return value

    def tf_type(self) -> bytes:
        return self._json


class Nested(NestedBlock):  # type: ignore[misc]
    """A nested block in any nesting mode (``tf`` itself only offers set and single)."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        super().__init__(name, NestMode.Single, block(spec["block"]), spec.get("min_items"), spec.get("max_items"))
        self.mode = spec["nesting_mode"]

    def to_pb(self) -> Any:
        return pb.Schema.NestedBlock(
            type_name=self.type_name,
            block=self.block.to_pb(),
            nesting=_NESTING[self.mode],
            min_items=self.min_items or 0,
            max_items=self.max_items or 0,
        )

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, value: Any) -> Any:
        return value

    def semantically_equal(self, a_decoded: Any, b_decoded: Any) -> bool:
        return bool(a_decoded == b_decoded)


def attributes(spec: dict[str, Any]) -> list[Any]:
    return [
        Attribute(
            name,
            CtyType(attr["type"]),
            description=attr.get("description"),
            required=attr.get("required", False),
            optional=attr.get("optional", False),
            computed=attr.get("computed", False),
            sensitive=attr.get("sensitive", False),
            deprecated=attr.get("deprecated"),
        )
        for name, attr in spec.get("attributes", {}).items()
    ]


def block(spec: dict[str, Any]) -> Any:
    nested = [Nested(name, sub) for name, sub in spec.get("block_types", {}).items()]
    return Block(attributes=attributes(spec), block_types=nested, description=spec.get("description"))


def schema(spec: dict[str, Any]) -> Any:
    inner = spec["block"]
    nested = [Nested(name, sub) for name, sub in inner.get("block_types", {}).items()]
    return Schema(attributes=attributes(inner), block_types=nested, version=spec.get("version", 0))


def _schema_only(ctx: Any, *_: Any) -> None:
    ctx.diagnostics.add_error(SCHEMA_ONLY)


def resource_type(type_name: str, spec: dict[str, Any], base: type) -> type:
    """A class per resource or data source type, as ``tf`` expects."""
    built = schema(spec)
    body: dict[str, Any] = {
        "__init__": lambda self, provider: None,
        "get_name": classmethod(lambda cls: type_name),
        "get_schema": classmethod(lambda cls: built),
        "create": lambda self, ctx, planned: _schema_only(ctx),
        "read": lambda self, ctx, current: _schema_only(ctx),
        "update": lambda self, ctx, current, planned: _schema_only(ctx),
        "delete": lambda self, ctx, current: _schema_only(ctx),
    }
    return type(type_name, (base,), body)


class StandInProvider(Provider):  # type: ignore[misc]
    def __init__(self, schema_file: Path) -> None:
        ((self.address, provider),) = json.loads(schema_file.read_text(encoding="utf-8"))["provider_schemas"].items()
        self._provider_schema = schema(provider["provider"])
        self._resources = [resource_type(t, s, Resource) for t, s in provider["resource_schemas"].items()]
        self._data_sources = [resource_type(t, s, DataSource) for t, s in provider["data_source_schemas"].items()]

    def get_model_prefix(self) -> str:
        return ""

    def full_name(self) -> str:
        return str(self.address)

    def get_provider_schema(self, diags: Any) -> Any:
        return self._provider_schema

    def validate_config(self, diags: Any, config: Any) -> None:
        return None

    def configure_provider(self, diags: Any, config: Any) -> None:
        return None

    def get_data_sources(self) -> list[type]:
        return self._data_sources

    def get_resources(self) -> list[type]:
        return self._resources


def main(argv: list[str]) -> None:
    schema_file = Path(argv[1]) if len(argv) > 1 and not argv[1].startswith("-") else DEFAULT_SCHEMA
    runner.run_provider(StandInProvider(schema_file), argv)


if __name__ == "__main__":
    main(sys.argv)
