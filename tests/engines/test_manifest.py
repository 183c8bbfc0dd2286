"""``engine.toml`` validation, parameter resolution and input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloister.engines.bundle import builtin_engine
from cloister.engines.manifest import load_manifest, parse_manifest
from cloister.errors import JobInvalid, ManifestInvalid

BASE = """\
name = "demo"
version = "1.2.3"
entrypoint = "demo.main"

[inputs.model]
description = "one model"
max = 1

[inputs.datasets]
description = "some data"
min = 0

[outputs.adapter]
description = "weights"

[parameters.lr]
type = "float"
default = 0.001
min = 0
max = 1
description = "learning rate"

[parameters.steps]
type = "int"
description = "required, no default"

[parameters.flag]
type = "bool"
default = false
description = "a switch"

[parameters.names]
type = "list[str]"
default = ["a"]
description = "strings"

[resources]
cpus = 2
"""


def test_parse_a_valid_manifest() -> None:
    manifest = parse_manifest(BASE)
    assert (manifest.name, manifest.version, manifest.entrypoint) == ("demo", "1.2.3", "demo.main")
    assert not manifest.entry_is_file
    assert manifest.inputs["model"].max_files == 1
    assert manifest.inputs["datasets"].min_files == 0
    assert manifest.outputs == {"adapter": "weights"}
    assert manifest.parameters["steps"].required
    assert manifest.resources.cpus == 2
    assert manifest.resources.memory_mb == 1024


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "\n[[[", "not valid TOML"),
        (lambda t: t.replace('name = "demo"\n', ""), "missing name"),
        (lambda t: t.replace('"demo"', '"Demo Engine"'), "not a valid engine name"),
        (lambda t: t.replace('"1.2.3"', '"latest"'), "not a valid version"),
        (lambda t: t.replace('version = "1.2.3"', "version = 1"), "wrong type"),
        (lambda t: t.replace('"demo.main"', '"/abs/main.py"'), "inside the bundle"),
        (lambda t: t.replace('"demo.main"', '"../main.py"'), "inside the bundle"),
        (lambda t: t.replace('"demo.main"', '"demo-main"'), "neither a module path"),
        (lambda t: t.replace('"demo.main"', '""'), "neither a module path"),
        (lambda t: 'colour = "red"\n' + t, "unknown key"),
        (lambda t: t.replace('type = "float"', 'type = "complex"'), "not one of"),
        (lambda t: t.replace("default = 0.001", 'default = "fast"'), "default is invalid"),
        (lambda t: t.replace("default = 0.001", "default = 2.0"), "default is invalid"),
        (lambda t: t.replace("default = false", "default = 0"), "default is invalid"),
        (lambda t: t.replace('default = ["a"]', "default = [1]"), "default is invalid"),
        (lambda t: t.replace('default = ["a"]', 'default = ["a"]\nmin = 1'), "only numbers have bounds"),
        (lambda t: t.replace('description = "a switch"\n', ""), "missing description"),
        (lambda t: t.replace("max = 1\n", "max = 0\n"), "min <= max"),
        (lambda t: t.replace("[inputs.model]", "[inputs.Model]"), "not a valid name"),
        (lambda t: t.replace("[outputs.adapter]", '[outputs."../adapter"]'), "not a valid file or folder name"),
        (lambda t: t.replace("cpus = 2", "cpus = -1"), "must not be negative"),
        (lambda t: t.replace("cpus = 2", "disk = 2"), "unknown key"),
        (lambda t: t.replace("[outputs.adapter]", "[outputs.adapter]\nformat = 'x'"), "unknown key"),
        (lambda t: 'outputs = "adapter"\n' + t.replace('[outputs.adapter]\ndescription = "weights"', ""), "table of"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(edit: object, message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message):
        parse_manifest(edit(BASE))  # type: ignore[operator]


def test_resolve_params_fills_defaults_and_converts() -> None:
    manifest = parse_manifest(BASE)
    resolved = manifest.resolve_params({"steps": 5, "lr": 1})
    assert resolved == {"lr": 1.0, "steps": 5, "flag": False, "names": ["a"]}
    assert isinstance(resolved["lr"], float)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"steps": 5, "epochs": 3}, "no parameter"),
        ({}, "needs the parameter 'steps'"),
        ({"steps": "5"}, "must be of type int"),
        ({"steps": True}, "must be of type int"),
        ({"steps": 5.0}, "must be of type int"),
        ({"steps": 5, "lr": -0.5}, "must be >= 0"),
        ({"steps": 5, "lr": 1.5}, "must be <= 1"),
        ({"steps": 5, "lr": float("nan")}, "must be of type float"),
        ({"steps": 5, "flag": 1}, "must be of type bool"),
        ({"steps": 5, "names": "a"}, "must be of type list"),
    ],
)
def test_bad_params_are_refused(given: dict[str, object], message: str) -> None:
    with pytest.raises(JobInvalid, match=message):
        parse_manifest(BASE).resolve_params(given)


def test_check_inputs() -> None:
    manifest = parse_manifest(BASE)
    manifest.check_inputs({"model": ["m"]})
    manifest.check_inputs({"model": ["m"], "datasets": ["a", "b", "c"]})
    with pytest.raises(JobInvalid, match="no input role"):
        manifest.check_inputs({"model": ["m"], "weights": ["w"]})
    with pytest.raises(JobInvalid, match="takes 1 to 1 file"):
        manifest.check_inputs({})
    with pytest.raises(JobInvalid, match="got 2"):
        manifest.check_inputs({"model": ["m", "n"]})


def test_load_manifest_needs_the_entrypoint_in_the_folder(tmp_path: Path) -> None:
    (tmp_path / "engine.toml").write_text(BASE)
    with pytest.raises(ManifestInvalid, match="not in the bundle"):
        load_manifest(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "main.py").write_text("")
    assert load_manifest(tmp_path).name == "demo"


def test_script_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "engine.toml").write_text(BASE.replace('"demo.main"', '"bin/run.py"'))
    with pytest.raises(ManifestInvalid, match=r"bin/run\.py"):
        load_manifest(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "run.py").write_text("")
    assert load_manifest(tmp_path).entry_is_file


def test_package_entrypoint_uses_its_main(tmp_path: Path) -> None:
    (tmp_path / "engine.toml").write_text(BASE.replace('"demo.main"', '"demo"'))
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "__main__.py").write_text("")
    assert load_manifest(tmp_path).entrypoint == "demo"


def test_unreadable_manifest(tmp_path: Path) -> None:
    (tmp_path / "engine.toml").write_bytes(b"\xff\xfe name")
    with pytest.raises(ManifestInvalid, match="cannot read"):
        load_manifest(tmp_path)


def test_the_builtin_lora_manifest_is_valid_and_complete() -> None:
    manifest = load_manifest(builtin_engine("lora_finetune"))
    assert set(manifest.inputs) == {"model", "datasets"}
    assert set(manifest.outputs) == {"adapter", "metrics.json"}
    defaults = manifest.resolve_params({})
    assert defaults["seed"] == 0 and defaults["eval_questions"] == []
