"""`cloister verify …`: check evidence, reports, manifests and receipts offline, as a checklist."""

from __future__ import annotations

import base64
import dataclasses
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from cloister.attest.checks import Checklist
from cloister.attest.der import parse_pem_certificates
from cloister.attest.registry import platform as load_platform
from cloister.cli.common import client, console, options, print_json
from cloister.cli.trust import trust
from cloister.client.orders import verify_manifest_file, verify_order_report
from cloister.client.sdk import Client
from cloister.consensus.receipt import ReceiptVerifyOptions, trust_from_ledger, verify_receipt
from cloister.crypto.canonical import canonical_json
from cloister.errors import AttestationError, CloisterError, ConfigError, StaleEvidence
from cloister.net import HttpClient
from cloister.node.delivery import fetch_delivery
from cloister.provenance.fields import check_binding

REPORT_DATA_SIZE = 64
app = typer.Typer(help="Verify attestation evidence and signed records offline.", no_args_is_help=True)


class PlatformName(StrEnum):
    snp = "snp"
    tdx = "tdx"
    nvgpu = "nvgpu"
    sim = "sim"


def _detect(path: Path) -> str:
    """Guess the platform from the evidence itself when --platform is not given."""
    head = path.read_bytes()[:4096]
    if head[:4] == b"HCLA" or len(head) in (1184, 2600):
        return "snp"
    if head[:2] in (b"\x04\x00", b"\x05\x00"):
        return "tdx"
    if head.lstrip()[:1] in (b"[", b"{") or head[:8].lower() == b"11e001ff":
        return "nvgpu"
    raise ConfigError(f"cannot tell which platform {path} is from; pass --platform")


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO time like 2025-01-31T12:00:00Z", param_hint="--at") from None
    if moment.tzinfo is None:
        raise typer.BadParameter("give a time zone, e.g. 2025-01-31T12:00:00Z", param_hint="--at")
    return moment


def _load_policy(path: Path | None, name: str, policy_cls: Any) -> Any:
    """The platform's table of a policy TOML file (an appraisal policy or a bare platform table), else defaults."""
    if path is None:
        return policy_cls()
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read policy {path}: {exc}") from None
    table = document.get(name, document)
    return policy_cls.from_toml(table)


def _options(module: Any, **values: Any) -> Any:
    """The platform's VerifyOptions with every given value it has a field for."""
    names = {f.name for f in dataclasses.fields(module.VerifyOptions)}
    return module.VerifyOptions(**{k: v for k, v in values.items() if k in names and v is not None})


@contextmanager
def _combined(paths: list[Path]) -> Iterator[Path | None]:
    """One certificate file for the platform loader: the only one given, or a PEM bundle of all of them."""
    if len(paths) <= 1:
        yield paths[0] if paths else None
        return
    pem = []
    for path in paths:
        data = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            pem.append(data.decode("ascii", errors="replace").strip())
        else:
            body = base64.encodebytes(data).decode().strip()
            pem.append(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----")
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "certs.pem"
        bundle.write_text("\n".join(pem) + "\n")
        yield bundle


def _print_checks(checklist: Checklist) -> None:
    table = Table("", "check", "detail", show_edge=False)
    for item in checklist.items:
        table.add_row("[green]✓[/]" if item.passed else "[red]✗[/]", item.name, item.detail)
    console.print(table)


@app.command()
def evidence(
    path: Annotated[Path, typer.Argument(help="Report, quote or GPU evidence file.", exists=True, dir_okay=False)],
    platform_name: Annotated[
        PlatformName | None, typer.Option("--platform", help="Evidence platform (default: detected).")
    ] = None,
    certs: Annotated[
        list[Path] | None, typer.Option(help="Certificates (PEM bundle or DER); repeat to combine several files.")
    ] = None,
    collateral: Annotated[Path | None, typer.Option(help="Folder of vendor collateral (TDX).")] = None,
    rims: Annotated[Path | None, typer.Option(help="Folder of reference measurements (NVIDIA RIMs).")] = None,
    roots: Annotated[
        Path | None, typer.Option(help="Trust these root certificates (PEM) instead of the pinned.")
    ] = None,
    at: Annotated[str | None, typer.Option(help="Verify as of this ISO time (default: now).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML (default: the platform's safe defaults).")] = None,
    no_policy: Annotated[bool, typer.Option("--no-policy", help="Check authenticity only.")] = False,
    nonce: Annotated[str | None, typer.Option(help="Expected report data / GPU nonce, hex.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Verify evidence (signatures, chains, collateral, freshness), then validate it against a policy."""
    name = platform_name.value if platform_name else _detect(path)
    checklist = Checklist()
    claims: Any = None
    error: CloisterError | None = None
    try:
        expected = bytes.fromhex(nonce) if nonce else None
    except ValueError:
        raise typer.BadParameter("--nonce takes hex", param_hint="--nonce") from None
    try:
        module = load_platform(name)
        with _combined(certs or []) as cert_file:
            loaded = module.Evidence.from_files(path, certs=cert_file, collateral=collateral, rims=rims)
        root_certs = tuple(parse_pem_certificates(roots.read_bytes())) if roots else None
        takes_nonce = "expected_nonce" in {f.name for f in dataclasses.fields(module.VerifyOptions)}
        if expected is not None and name != "nvgpu":
            expected = expected.ljust(REPORT_DATA_SIZE, b"\0")
        options = _options(module, now=_parse_time(at), roots=root_certs, expected_nonce=expected)
        claims = module.verify(loaded, options, checklist=checklist)
        if expected is not None and not takes_nonce:
            with checklist.run("nonce", "report data equals the expected nonce"):
                if claims.report_data != expected:
                    raise StaleEvidence("report data is not the expected nonce: a replay?", check="nonce")
        if not no_policy:
            module.validate(claims, _load_policy(policy, name, module.Policy), checklist=checklist)
    except (AttestationError, ConfigError) as exc:
        error = exc
    if as_json:
        print_json(
            {
                "ok": error is None,
                "platform": name,
                "claims": claims.to_json() if claims is not None else None,
                "checks": checklist.to_json(),
                "error": error.to_json()["error"] if error else None,
            }
        )
    else:
        if claims is not None:
            table = Table(show_header=False, title=f"{name} claims")
            for key, value in claims.to_json().items():
                table.add_row(key, str(value))
            console.print(table)
        _print_checks(checklist)
        if error is None:
            console.print("[green]evidence verified[/]" + ("" if no_policy else " and the policy is satisfied"))
        else:
            console.print(f"[red]rejected[/] ({error.code}): {error.message}")
    if error is not None:
        raise typer.Exit(1)


def _report_checklist(checklist: Checklist, error: CloisterError | None, what: str, as_json: bool) -> None:
    if as_json:
        print_json(
            {"ok": error is None, "checks": checklist.to_json(), "error": error.to_json()["error"] if error else None}
        )
    else:
        _print_checks(checklist)
        console.print(
            f"[green]{what} verified[/]" if error is None else f"[red]rejected[/] ({error.code}): {error.message}"
        )
    if error is not None:
        raise typer.Exit(1)


@app.command()
def report(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="An order id (its delivery on the devnet) or a signed report file.")],
    manifest_file: Annotated[Path | None, typer.Option("--manifest", help="Also check this manifest file.")] = None,
    policy: Annotated[Path | None, typer.Option(help="Appraisal policy TOML (default: the devnet's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """An order report: vendor root → evidence → loader key → signature → digests match the offers → ledger."""
    chosen, roots = trust(ctx, policy)
    checklist = Checklist()
    error: CloisterError | None = None
    with client(ctx) as cl:
        try:
            if Path(target).is_file():
                report_bytes = Path(target).read_bytes()
                manifest_bytes = manifest_file.read_bytes() if manifest_file else None
            else:
                delivery = fetch_delivery(cl.store, cl.ledger.order(target))
                report_bytes, manifest_bytes = delivery.report, delivery.manifest
            verify_order_report(
                cl.ledger, report_bytes, policy=chosen, roots=roots, manifest_bytes=manifest_bytes, checklist=checklist
            )
        except CloisterError as exc:
            error = exc
    _report_checklist(checklist, error, "order report", as_json)


@app.command()
def manifest(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A provenance manifest (DSSE envelope).", exists=True, dir_okay=False)],
    policy: Annotated[Path | None, typer.Option(help="Appraisal policy TOML (default: the devnet's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """A provenance manifest: its machine's TCB, the loader's signature, its inputs against the order's offers."""
    chosen, roots = trust(ctx, policy)
    checklist = Checklist()
    error: CloisterError | None = None
    with client(ctx) as cl:
        try:
            verify_manifest_file(cl.ledger, path.read_bytes(), policy=chosen, roots=roots, checklist=checklist)
        except CloisterError as exc:
            error = exc
    _report_checklist(checklist, error, "manifest", as_json)


def _receipt_bytes(target: str, gateway_url: str | None) -> bytes:
    """The signed receipt: a file, or the receipt with that id fetched from a gateway."""
    if Path(target).is_file():
        return Path(target).read_bytes()
    if gateway_url is None:
        raise ConfigError(f"{target!r} is not a file; to fetch a receipt by id, pass --gateway URL")
    with HttpClient(gateway_url) as http:
        return canonical_json(http.get_json(f"/v1/receipts/{quote(target, safe='')}"))


@app.command()
def receipt(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A signed receipt file, or a receipt id (with --gateway).")],
    gateway_key: Annotated[
        str | None, typer.Option("--gateway-key", help="Accept only receipts signed by this gateway key (hex).")
    ] = None,
    ledger_url: Annotated[
        str | None, typer.Option("--ledger", help="Also check replica keys, TCB ids and head hash on this ledger.")
    ] = None,
    gateway_url: Annotated[
        str | None, typer.Option("--gateway", help="Fetch the receipt by id from this gateway's /v1/receipts.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """An inference receipt: gateway signature, selection recomputed, replicas' commitments, verdict, answer."""
    try:
        pinned = bytes.fromhex(gateway_key) if gateway_key is not None else None
    except ValueError:
        raise typer.BadParameter("--gateway-key takes the gateway's Ed25519 key as hex") from None
    checklist = Checklist()
    error: CloisterError | None = None
    verified = None
    fetched = not Path(target).is_file()
    try:
        data = _receipt_bytes(target, gateway_url)
        trusted = ReceiptVerifyOptions(gateway_key=pinned)
        if ledger_url is not None:
            with Client(home=options(ctx).resolved_home, ledger_url=ledger_url) as cl:
                trusted = trust_from_ledger(cl.ledger, data, pinned)
        verified = verify_receipt(data, trusted, checklist=checklist).receipt
        if fetched:
            with checklist.run("receipt id", f"the gateway returned receipt {target}"):
                check_binding(verified.receipt_id, target, "receipt")
    except CloisterError as exc:
        error = exc
    if as_json:
        print_json(
            {
                "ok": error is None,
                "receipt": verified.to_json() if verified is not None else None,
                "checks": checklist.to_json(),
                "error": error.to_json()["error"] if error else None,
            }
        )
        if error is not None:
            raise typer.Exit(1)
        return
    if verified is not None:
        table = Table(show_header=False, title=f"receipt {verified.receipt_id}")
        verdict = verified.verdict
        for key, value in (
            ("deployment", verified.deployment_id),
            ("mode", verified.mode),
            ("agreed", "yes" if verdict.agreed else "no"),
            ("selected", ", ".join(verified.selection.selected)),
            ("referees", ", ".join(verified.selection.referees) or "-"),
            ("majority", ", ".join(verdict.majority) or "-"),
            ("dissenters", ", ".join(verdict.dissenters) or "-"),
            ("dispute", verified.dispute_id or "-"),
            ("answer digest", verified.content_digest),
            ("gateway", verified.gateway),
        ):
            table.add_row(key, value)
        console.print(table)
    _report_checklist(checklist, error, "receipt", False)
