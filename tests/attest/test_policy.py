"""Appraisal policy files and the platform registry they lean on."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloister.attest import registry, sim
from cloister.attest.policy import AppraisalPolicy
from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.errors import ConfigError

POLICIES = Path(__file__).resolve().parents[2] / "src" / "cloister" / "attest" / "policies"


def test_defaults_are_a_real_networks() -> None:
    policy = AppraisalPolicy()
    assert (policy.allow_simulated, policy.cpu_platforms, policy.gpu_platforms, policy.require_gpu) == (
        False,
        ("snp", "tdx"),
        ("nvgpu",),
        False,
    )
    assert AppraisalPolicy.from_toml("") == policy


def test_the_packaged_policies() -> None:
    devnet = AppraisalPolicy.packaged("devnet")
    assert devnet.allow_simulated and devnet.cpu_platforms == ("sim", "snp", "tdx")
    assert devnet.gpu_platforms == ("sim", "nvgpu") and not devnet.require_gpu
    assert devnet.rules("sim") == sim.Policy(measurements=(), allow_debug=False, minimum_tcb=1)
    assert devnet == AppraisalPolicy.load(POLICIES / "devnet.toml")
    production = AppraisalPolicy.packaged("production")
    assert not production.allow_simulated and "sim" not in production.cpu_platforms + production.gpu_platforms
    assert set(production.tables) == {"snp", "tdx", "nvgpu"}
    assert production.rules("tdx").tcb_statuses == ("UpToDate",)  # type: ignore[attr-defined]
    for name in ("snp", "tdx", "nvgpu"):
        assert production.rules(name).allow_debug is False  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="no packaged policy"):
        AppraisalPolicy.packaged("lenient")


def test_digest_names_the_parsed_policy() -> None:
    devnet = AppraisalPolicy.packaged("devnet")
    assert devnet.digest == digest_bytes(canonical_json(devnet.to_json()))
    assert AppraisalPolicy.from_json(devnet.to_json()) == devnet
    spelled_differently = AppraisalPolicy.from_toml(
        'cpu_platforms = [ "sim", "snp", "tdx" ]\nallow_simulated = true\ngpu_platforms = ["sim", "nvgpu"]\n'
        "[sim]\nminimum_tcb = 1\nallow_debug = false\nmeasurements = []\n"
    )
    assert spelled_differently.digest == devnet.digest
    assert AppraisalPolicy().digest != devnet.digest


def test_platform_rules_default_to_the_platforms_own() -> None:
    policy = AppraisalPolicy.from_toml('cpu_platforms = ["sim"]\nallow_simulated = true')
    assert policy.rules("sim") == sim.Policy()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allow_simulated = 1", "allow_simulated must be true or false"),
        ("require_gpu = 'yes'", "require_gpu"),
        ("cpu_platforms = 'snp'", "list of platform names"),
        ("cpu_platforms = [1]", "list of platform names"),
        ("cpu_platforms = ['sgx']", "unknown attestation platform 'sgx'"),
        ("cpu_platforms = ['nvgpu']", "cannot fill the CPU slot"),
        ("gpu_platforms = ['snp']", "cannot fill the GPU slot"),
        ("cpu_platforms = ['snp', 'snp']", "twice"),
        ("require_gpu = true\ngpu_platforms = []", "needs at least one platform"),
        ("allow_simulation = true", "unknown policy key 'allow_simulation'"),
        ("[sgx]\nx = 1", "unknown policy key 'sgx'"),
        ("sim = 3", "unknown policy key 'sim'"),
        ("[sim]\nallow_debug = false", r"\[sim\] table but sim is in neither"),
        ("cpu_platforms = ['sim']\n[sim]\nallow_debugging = true", "unknown key"),
        ("cpu_platforms = ['sim']\n[sim]\nminimum_tcb = 1.5", "minimum_tcb"),
        ("cpu_platforms = ['sim']\n[sim]\nmeasurements = [1979-05-27]", "measurements"),
        ("allow_simulated = [", "not valid TOML"),
    ],
)
def test_bad_policies_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AppraisalPolicy.from_toml(text)


def test_values_without_a_canonical_form_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lenient:
        @classmethod
        def from_toml(cls, table: dict[str, Any]) -> Lenient:
            return cls()

    _fake_platform(monkeypatch, "fake", Policy=Lenient)
    with pytest.raises(ConfigError, match="no canonical form"):
        AppraisalPolicy.from_toml("cpu_platforms = ['fake']\n[fake]\nratio = 0.5")


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        AppraisalPolicy.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("allow_simulated = 'yes'")
    with pytest.raises(ConfigError, match=f"{bad}: policy field allow_simulated"):
        AppraisalPolicy.load(bad)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        AppraisalPolicy.load(binary)


# --- the registry ---------------------------------------------------------------------------------------------


def _fake_platform(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> None:
    """Register platform ``name`` backed by an in-memory module with ``attrs``."""
    module = types.ModuleType(f"fake_platforms.{name}")
    defaults: dict[str, Any] = {
        "PLATFORM": name,
        "Evidence": object,
        "VerifyOptions": object,
        "verify": print,
        "Claims": object,
        "Policy": object,
        "validate": print,
    }
    for key, value in {**defaults, **attrs}.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    info = registry.PlatformInfo(name, module.__name__, frozenset({registry.CPU}), simulated=False)
    monkeypatch.setitem(registry.KNOWN, name, info)


def test_registry_knows_every_platform_and_its_slots() -> None:
    assert set(registry.KNOWN) == {"snp", "tdx", "nvgpu", "sim"}
    assert registry.info("sim").roles == {"cpu", "gpu"} and registry.info("sim").simulated
    assert registry.info("nvgpu").roles == {"gpu"} and not registry.info("snp").simulated
    assert registry.platform("sim") is sim
    with pytest.raises(ConfigError, match="unknown attestation platform 'sgx'"):
        registry.platform("sgx")


def test_a_missing_platform_module_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    info = registry.PlatformInfo("ghost", "cloister.attest.ghost", frozenset({registry.CPU}), simulated=False)
    monkeypatch.setitem(registry.KNOWN, "ghost", info)
    with pytest.raises(ConfigError, match="not available in this installation"):
        registry.platform("ghost")
    AppraisalPolicy.from_toml("cpu_platforms = ['ghost']")  # listed without a table: needed only at appraisal
    with pytest.raises(ConfigError, match="not available"):
        AppraisalPolicy.from_toml("cpu_platforms = ['ghost']\n[ghost]\nx = 1")
    with pytest.raises(ConfigError, match="not available"):
        AppraisalPolicy.from_toml("cpu_platforms = ['ghost']").rules("ghost")


def test_an_incomplete_platform_module_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_platform(monkeypatch, "half")
    delattr(sys.modules["fake_platforms.half"], "validate")
    with pytest.raises(ConfigError, match="lacks validate"):
        registry.platform("half")
    _fake_platform(monkeypatch, "liar", PLATFORM="sim")
    with pytest.raises(ConfigError, match="says it is platform 'sim'"):
        registry.platform("liar")


def test_a_missing_dependency_of_a_platform_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "broken_platform.py").write_text("import no_such_dependency_of_a_platform\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    info = registry.PlatformInfo("broken", "broken_platform", frozenset({registry.CPU}), simulated=False)
    monkeypatch.setitem(registry.KNOWN, "broken", info)
    with pytest.raises(ConfigError, match="needs the Python module 'no_such_dependency_of_a_platform'"):
        registry.platform("broken")


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["sim", "snp", "nvgpu"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(["allow_simulated", "cpu_platforms", "gpu_platforms", "require_gpu", "sim", "sgx", "x"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_random_policies_raise_only_config_errors(data: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        AppraisalPolicy.from_json(data)
