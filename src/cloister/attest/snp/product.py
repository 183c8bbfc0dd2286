"""AMD EPYC product lines that run SEV-SNP, and how evidence names them.

The product decides which ARK anchors the chain and how a TCB_VERSION is laid out (Turin moved the fields), so a
verifier must know it. Evidence names it in up to four places (the VCEK's productName, the report's CPUID, the
ASK's name, the caller); they must agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloister.errors import EvidenceMalformed

PRODUCTS = ("Milan", "Genoa", "Turin")


@dataclass(frozen=True)
class Product:
    """A product line, with the stepping (e.g. ``B0``) when the VCEK's productName gives one."""

    name: str
    stepping: str | None = None

    @classmethod
    def parse(cls, text: str) -> Product:
        """``"Milan"``, ``"Milan-B0"``, ``"Genoa"``... as in the VCEK productName extension and KDS URLs."""
        name, _, stepping = text.partition("-")
        if name not in PRODUCTS or (stepping and not (stepping.isascii() and stepping.isalnum())):
            raise EvidenceMalformed(
                f"unknown AMD product {text!r}: expected one of {', '.join(PRODUCTS)}, optionally with a stepping "
                "such as Milan-B0",
                check="product",
            )
        return cls(name, stepping or None)

    @property
    def turin_layout(self) -> bool:
        """Turin (family 1Ah) encodes TCB_VERSION as FMC, BL, TEE, SNP, ..., uCode."""
        return self.name == "Turin"

    def __str__(self) -> str:
        return f"{self.name}-{self.stepping}" if self.stepping else self.name


def product_from_cpuid(family: int, model: int) -> str | None:
    """The product line of a CPUID family/model pair from a v3+ report, or None for one we do not know."""
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"  # Genoa, and Bergamo/Siena which use Genoa's keys
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


def product_from_signer_name(common_name: str) -> str | None:
    """``SEV-Milan`` (ASK) or ``SEV-VLEK-Milan`` (ASVK) -> ``Milan``."""
    for prefix in ("SEV-VLEK-", "SEV-"):
        if common_name.startswith(prefix) and common_name[len(prefix) :] in PRODUCTS:
            return common_name[len(prefix) :]
    return None
