"""``@cdktf/provider-google``, the npm package the stand-in provider's schema is generated from:
fetched once, and the facts its compiled JavaScript holds about each resource (HCL names,
blocks, kinds, getters) read back."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

NPM_PACKAGE = "@cdktf/provider-google"
NPM_VERSION = "16.12.1"  # the release generated from google provider 6.50.0


# --- the npm package --------------------------------------------------------------------


def fetch_package(cache: Path) -> Path:
    """Unpack ``@cdktf/provider-google`` into ``cache`` once; return the package folder."""
    target = cache / f"provider-google-{NPM_VERSION}"
    if (target / "package" / ".jsii").is_file():
        return target / "package"
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to fetch the schema source: apt-get install npm")
    target.mkdir(parents=True, exist_ok=True)
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    subprocess.run(
        [npm, "pack", spec, "--silent", "--pack-destination", str(target)],
        check=True,
        cwd=target,
        stdout=subprocess.DEVNULL,
    )
    tarball = next(target.glob("*.tgz"))
    with tarfile.open(tarball) as archive:
        # Only the assembly and the compiled modules: the rest (typings, docs) is most of it.
        wanted = [m for m in archive.getmembers() if m.name == "package/.jsii" or _is_module(m.name)]
        archive.extractall(target, members=wanted, filter="data")
    tarball.unlink()
    return target / "package"


def _is_module(name: str) -> bool:
    return name.startswith("package/lib/") and name.endswith("/index.js")


# --- reading the compiled JavaScript ----------------------------------------------------

_HCL_ENTRY = re.compile(
    r"^\s+(?P<tf>\w+): \{\n\s+value: (?P<value>.*),\n\s+isBlock: (?P<block>true|false),\n"
    r'\s+type: "(?P<kind>\w+)",\n\s+storageClassType: "(?P<storage>\w+)",',
    re.MULTILINE,
)
_HCL_FUNCTION = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{$", re.MULTILINE)
_CLASS = re.compile(r"^class (\w+) extends ([\w.]+) \{$", re.MULTILINE)
_GETTER = re.compile(r"get (\w+)\(\) \{\n\s+return this\.(?:get(\w+)Attribute|interpolationForAttribute)\('(\w+)'\)")
_MEMBER = re.compile(r'this\._(\w+) = new ([\w.]+)\(this, "(\w+)"(?:, (true|false))?\)')
_TF_TYPE = re.compile(r'^(\w+)\.tfResourceType = "(\w+)";$', re.MULTILINE)
_VALUE_NAME = re.compile(r"(?:struct\.|this\._)(\w+)")


@dataclass(frozen=True)
class HclEntry:
    tf_name: str
    is_block: bool
    kind: str  # simple, list, set, map or struct
    storage: str  # string, number, boolean, stringList, stringMap, ... or a class name


@dataclass(frozen=True)
class Getter:
    tf_name: str
    reader: str  # String, Number, Boolean, List, NumberList, StringMap, ... or "new <Class>"
    wraps_set: bool = False


@dataclass
class JsModule:
    """The facts one ``lib/<module>/index.js`` holds, by struct or class name."""

    hcl: dict[str, dict[str, HclEntry]] = field(default_factory=dict)  # owner -> camelName -> entry
    getters: dict[str, dict[str, Getter]] = field(default_factory=dict)  # class -> camelName -> getter
    tf_types: dict[str, str] = field(default_factory=dict)  # class -> google_...

    @classmethod
    def parse(cls, text: str) -> JsModule:
        module = cls()
        for name, tf_type in _TF_TYPE.findall(text):
            module.tf_types[name] = tf_type
        sections = sorted(
            [(m.start(), "function", m.group(1)[0].upper() + m.group(1)[1:]) for m in _HCL_FUNCTION.finditer(text)]
            + [(m.start(), "class", m.group(1)) for m in _CLASS.finditer(text)]
        )
        for index, (start, kind, owner) in enumerate(sections):
            end = sections[index + 1][0] if index + 1 < len(sections) else len(text)
            body = text[start:end]
            entries: dict[str, HclEntry] = {}
            for m in _HCL_ENTRY.finditer(body):
                names = _VALUE_NAME.findall(m.group("value"))
                if not names:
                    continue
                entries[names[-1]] = HclEntry(
                    m.group("tf"), m.group("block") == "true", m.group("kind"), m.group("storage")
                )
            if entries:
                module.hcl[owner] = entries
            if kind == "class":
                getters = {camel: Getter(tf, reader or "interpolation") for camel, reader, tf in _GETTER.findall(body)}
                for camel, klass, tf, wraps in _MEMBER.findall(body):
                    getters[camel] = Getter(tf, f"new {klass}", wraps == "true")
                module.getters[owner] = getters
        return module
