"""Generate the google provider schema subset that the stand-in provider serves.

No registry we can reach ships the google provider, but the npm package
``@cdktf/provider-google`` is generated from it and carries its schema: the ``.jsii``
assembly has every resource's arguments (name, type, optional or required, block or
attribute) and every computed attribute as a read-only getter; the compiled
``lib/<module>/index.js`` beside it adds what the types cannot say (the exact Terraform
name of each argument and getter, and whether a nested block is a list, a set or a
single block). This module turns both into Terraform's own JSON schema format
(``terraform providers schema -json``), for just the resource and data source types
that ``terraform/`` uses, and writes it to ``google-provider-schema.json``.

One fact neither file holds: which optional attributes are also computed (the provider
fills them in when the configuration leaves them out, e.g. ``build_config.service_account``
or ``service_config.available_cpu``). ``google-provider-computed.json`` lists them per type,
as the provider's 6.50.0 schema definitions declare them (``Optional: true, Computed: true``);
without them a mocked plan would show null where the real provider shows a value.

    python -m tools.terraform.schema            # regenerate (downloads the npm package once)
    python -m tools.terraform.schema --check    # exit 1 if a used type is missing
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from tools.terraform.cdktf import NPM_PACKAGE, NPM_VERSION, Getter, HclEntry, JsModule, fetch_package

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "terraform"
SCHEMA_FILE = Path(__file__).with_name("google-provider-schema.json")
COMPUTED_FILE = Path(__file__).with_name("google-provider-computed.json")
DEFAULT_CACHE = ROOT / ".venv" / "terraform-tools"

PROVIDER_ADDRESS = "registry.terraform.io/hashicorp/google"
PROVIDER_VERSION = "6.50.0"

_P = f"{NPM_PACKAGE}."
_USED_TYPE = re.compile(r'^\s*(resource|data|mock_resource|mock_data)\s+"(google_[a-z0-9_]+)"', re.MULTILINE)

Json = dict[str, Any]


# --- what the configuration uses -----------------------------------------------------


def used_types(tf_dir: Path = TERRAFORM_DIR) -> dict[str, set[str]]:
    """Resource and data source types named in ``*.tf`` and in the test files' mocks."""
    found: dict[str, set[str]] = {"resource": set(), "data": set()}
    files = [*tf_dir.glob("*.tf"), *tf_dir.glob("tests/*.tftest.hcl"), *tf_dir.glob("tests/*.tfmock.hcl")]
    for path in sorted(files):
        for kind, name in _USED_TYPE.findall(path.read_text(encoding="utf-8")):
            found["data" if kind in ("data", "mock_data") else "resource"].add(name)
    return found


def missing_types(schema: Json, used: Mapping[str, set[str]]) -> list[str]:
    provider = schema["provider_schemas"][PROVIDER_ADDRESS]
    missing = [f"resource {t}" for t in sorted(used["resource"]) if t not in provider["resource_schemas"]]
    missing += [f"data {t}" for t in sorted(used["data"]) if t not in provider["data_source_schemas"]]
    return missing


def load_schema(path: Path = SCHEMA_FILE) -> Json:
    data: Json = json.loads(path.read_text(encoding="utf-8"))
    return data


# --- building Terraform schema blocks ---------------------------------------------------

_PRIMITIVES = {"string": "string", "number": "number", "boolean": "bool"}
_STORAGE_TYPES: dict[str, Any] = {
    "string": "string",
    "number": "number",
    "boolean": "bool",
    "stringList": ["list", "string"],
    "numberList": ["list", "number"],
    "booleanList": ["list", "bool"],
    "stringMap": ["map", "string"],
    "numberMap": ["map", "number"],
    "booleanMap": ["map", "bool"],
}
_READER_TYPES: dict[str, Any] = {
    "String": "string",
    "Number": "number",
    "Boolean": "bool",
    "List": ["list", "string"],
    "NumberList": ["list", "number"],
    "StringMap": ["map", "string"],
    "NumberMap": ["map", "number"],
    "BooleanMap": ["map", "bool"],
    "new cdktf.StringMap": ["map", "string"],
    "new cdktf.NumberMap": ["map", "number"],
    "new cdktf.BooleanMap": ["map", "bool"],
    "new cdktf.StringMapList": ["list", ["map", "string"]],
}


def _summary(docs: Mapping[str, Any]) -> str:
    text = str(docs.get("summary", ""))
    return "" if text.startswith("Docs at Terraform Registry") else text


def optional_computed(path: Path = COMPUTED_FILE) -> dict[str, list[str]]:
    """Resource type -> dotted paths of its optional attributes that the provider also computes."""
    data: dict[str, list[str]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def mark_computed(block: Json, paths: Iterable[str]) -> list[str]:
    """Set ``computed`` on each optional attribute at ``paths``; return the paths not found as one."""
    missing = []
    for path in paths:
        *blocks, name = path.split(".")
        node: Json | None = block
        for part in blocks:
            node = node["block_types"][part]["block"] if node and part in node["block_types"] else None
        attribute = node["attributes"].get(name) if node else None
        if attribute is None or not attribute.get("optional"):
            missing.append(path)
        else:
            attribute["computed"] = True
    return missing


class Generator:
    def __init__(self, package: Path) -> None:
        self.package = package
        assembly = json.loads((package / ".jsii").read_text(encoding="utf-8"))
        self.types: dict[str, Json] = assembly["types"]
        self._modules: dict[str, JsModule] = {}

    @cached_property
    def classes_by_tf_type(self) -> dict[tuple[str, str], str]:
        """(resource|data, google_...) -> fqn of the cdktf class."""
        found: dict[tuple[str, str], str] = {}
        for fqn, spec in self.types.items():
            base = spec.get("base")
            if spec["kind"] != "class" or base not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
                continue
            tf_type = self.module(fqn).tf_types.get(spec["name"])
            if tf_type:
                found[("data" if base == "cdktf.TerraformDataSource" else "resource", tf_type)] = fqn
        return found

    def module(self, fqn: str) -> JsModule:
        source = self.types[fqn]["locationInModule"]["filename"]  # src/<module>/index.ts
        key = source.removeprefix("src/").removesuffix(".ts")
        if key not in self._modules:
            self._modules[key] = JsModule.parse((self.package / "lib" / f"{key}.js").read_text(encoding="utf-8"))
        return self._modules[key]

    # -- top level

    def provider(self) -> Json:
        fqn = f"{_P}provider.GoogleProvider"
        return {"version": 0, "block": self.block(f"{fqn}Config", fqn, hcl_owner="GoogleProvider", skip={"alias"})}

    def resource(self, kind: str, tf_type: str) -> Json:
        fqn = self.classes_by_tf_type.get((kind, tf_type))
        if fqn is None:
            raise KeyError(f"{kind} {tf_type} is not in {NPM_PACKAGE} {NPM_VERSION}")
        spec = self.types[fqn]
        config = spec["initializer"]["parameters"][-1]["type"]["fqn"]
        block = self.block(config, fqn, hcl_owner=spec["name"])
        # SDKv2 gives every resource an optional, computed id.
        if "id" in block["attributes"]:
            block["attributes"]["id"] = {"type": "string", "optional": True, "computed": True}
        if kind == "resource":
            missing = mark_computed(block, optional_computed().get(tf_type, []))
            if missing:
                raise KeyError(f"{COMPUTED_FILE.name}: {tf_type} has no optional attribute {', '.join(missing)}")
        return {"version": 0, "block": block}

    # -- blocks

    def block(self, struct: str, output_class: str | None, *, hcl_owner: str, skip: Iterable[str] = ()) -> Json:
        """A schema block from a config struct and the class whose getters expose its state."""
        spec = self.types[struct]
        module = self.module(struct)
        hcl = module.hcl.get(hcl_owner, {})
        attributes: dict[str, Json] = {}
        blocks: dict[str, Json] = {}
        config_names: set[str] = set()
        for prop in spec.get("properties", []):
            camel = prop["name"]
            config_names.add(camel)
            entry = hcl.get(camel)
            if entry is None or entry.tf_name in skip:
                continue
            required = not prop.get("optional", False)
            if entry.is_block:
                blocks[entry.tf_name] = self.nested_block(prop, entry, required)
            else:
                attribute: Json = {"type": self.attribute_type(prop["type"], entry)}
                attribute["required" if required else "optional"] = True
                description = _summary(prop.get("docs", {}))
                if description:
                    attribute["description"] = description
                if prop.get("docs", {}).get("deprecated"):
                    attribute["deprecated"] = True
                attributes[entry.tf_name] = attribute
        if output_class is not None:
            for name, type_ in self.computed_attributes(output_class, config_names).items():
                attributes.setdefault(name, {"type": type_, "computed": True})
        return {"attributes": dict(sorted(attributes.items())), "block_types": dict(sorted(blocks.items()))}

    def nested_block(self, prop: Json, entry: HclEntry, required: bool) -> Json:
        type_ = prop["type"]
        single = "fqn" in type_
        element = type_["fqn"] if single else self._array_element(type_)
        name = self.types[element]["name"]
        output = f"{element}OutputReference"
        nested: Json = {
            "nesting_mode": {"set": "set", "struct": "single"}.get(entry.kind, "list"),
            "block": self.block(element, output if output in self.types else None, hcl_owner=name),
        }
        if single and nested["nesting_mode"] != "single":
            nested["max_items"] = 1
        if required and nested["nesting_mode"] != "single":
            nested["min_items"] = 1
        return nested

    def _array_element(self, type_: Json) -> str:
        for option in type_.get("union", {}).get("types", [type_]):
            collection = option.get("collection")
            if collection and "fqn" in collection["elementtype"]:
                return str(collection["elementtype"]["fqn"])
        raise ValueError(f"not a block type: {type_}")

    def attribute_type(self, type_: Json, entry: HclEntry) -> Any:
        if entry.storage in _STORAGE_TYPES:
            known = _STORAGE_TYPES[entry.storage]
            if entry.kind == "set" and isinstance(known, list) and known[0] == "list":
                return ["set", known[1]]
            return known
        if "primitive" in type_:
            return _PRIMITIVES.get(type_["primitive"], "dynamic")
        return "dynamic"

    def computed_attributes(self, klass: str, config_names: set[str]) -> dict[str, Any]:
        """Read-only getters of a class: the computed attributes Terraform knows but config cannot set."""
        if klass not in self.types:
            return {}
        getters = self.module(klass).getters.get(self.types[klass]["name"], {})
        found: dict[str, Any] = {}
        for prop in self.types[klass].get("properties", []):
            camel = prop["name"]
            if prop.get("static") or camel.endswith("Input") or camel in config_names or camel.startswith("fqn"):
                continue
            getter = getters.get(camel)
            if getter is None:
                continue
            type_ = self.getter_type(getter, prop["type"])
            if type_ is not None:
                found[getter.tf_name] = type_
        return found

    def getter_type(self, getter: Getter, jsii_type: Json) -> Any:
        if getter.reader in _READER_TYPES:
            return _READER_TYPES[getter.reader]
        if getter.reader.startswith("new ") and "fqn" in jsii_type:
            # A computed nested object: SDKv2 exposes it as a list (or set) of objects.
            klass = str(jsii_type["fqn"])
            element = klass.removesuffix("List") + "OutputReference" if klass.endswith("List") else klass
            obj = self.computed_attributes(element, set())
            return ["set" if getter.wraps_set else "list", ["object", obj]]
        if "primitive" in jsii_type:
            return _PRIMITIVES.get(jsii_type["primitive"], "dynamic")
        return None

    # -- the whole subset

    def subset(self, used: Mapping[str, set[str]]) -> Json:
        return {
            "format_version": "1.0",
            "generated_from": f"npm {NPM_PACKAGE}@{NPM_VERSION} (.jsii and lib/*/index.js)",
            "provider_version": PROVIDER_VERSION,
            "provider_schemas": {
                PROVIDER_ADDRESS: {
                    "provider": self.provider(),
                    "resource_schemas": {t: self.resource("resource", t) for t in sorted(used["resource"])},
                    "data_source_schemas": {t: self.resource("data", t) for t in sorted(used["data"])},
                }
            },
        }


def write_schema(schema: Json, path: Path = SCHEMA_FILE) -> None:
    path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that every used type is in the subset")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where to keep the npm package")
    args = parser.parse_args(argv)
    used = used_types()
    if args.check:
        missing = missing_types(load_schema(), used)
        for item in missing:
            print(f"{SCHEMA_FILE.name} lacks {item}: run `make terraform-schema`", file=sys.stderr)
        return 1 if missing else 0
    schema = Generator(fetch_package(args.cache)).subset(used)
    write_schema(schema)
    provider = schema["provider_schemas"][PROVIDER_ADDRESS]
    print(
        f"wrote {SCHEMA_FILE.relative_to(ROOT)}: {len(provider['resource_schemas'])} resources, "
        f"{len(provider['data_source_schemas'])} data sources from {NPM_PACKAGE}@{NPM_VERSION}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
