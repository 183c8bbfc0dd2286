"""What the loader reads back from an engine: progress lines (usage), ``metrics.json`` (provenance metrics).

Also the one conversion between the ledger's parameters (canonical JSON, no floats: ``"2e-4"``) and an engine's
(typed by its manifest), and back to float-free values for the signed manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cloister.engines.manifest import EngineManifest
from cloister.errors import JobInvalid, LoaderError
from cloister.provenance.statement import Metrics

METRICS_FILE = "metrics.json"
EVAL_METRIC = "heldout_token_f1"
NO_EVAL = "none"


def last_int(entries: Sequence[Mapping[str, Any]], key: str) -> int:
    """The last non-negative integer ``key`` among progress lines, or 0."""
    for entry in reversed(entries):
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def wall_seconds(seconds: float) -> int:
    """Metered seconds, rounded up: a started second is a used second."""
    return math.ceil(seconds)


def engine_params(manifest: EngineManifest, given: Mapping[str, Any]) -> dict[str, Any]:
    """The order's parameters as the engine declares them: decimal strings become floats where it wants floats."""
    params = dict(given)
    for name, value in given.items():
        declared = manifest.parameters.get(name)
        if declared is not None and declared.type == "float" and isinstance(value, str):
            try:
                number = float(Decimal(value))
            except InvalidOperation:
                raise JobInvalid(f"parameter {name!r} must be a decimal number, got {value!r}") from None
            if not math.isfinite(number):
                raise JobInvalid(f"parameter {name!r} must be finite, got {value!r}")
            params[name] = number
    return manifest.resolve_params(params)


def signed_params(value: Any) -> Any:
    """``value`` with every float written as its shortest decimal string, as canonical JSON requires."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {key: signed_params(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [signed_params(item) for item in value]
    return value


def _decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LoaderError(f"the engine's {METRICS_FILE} has {what} = {value!r}, not a finite number; fix the engine")
    return Decimal(repr(value))


def read_metrics(outputs: Path) -> Metrics:
    """The provenance metrics from the engine's ``metrics.json``.

    The final loss is ``final_loss`` or the last ``loss_curve`` entry's ``loss``; the evaluation is the mean token
    F1 of the base and tuned answers (``evaluation.base.f1`` / ``evaluation.tuned.f1``), or ``"none"`` (both 0)
    when the order gave no held-out prompts.
    """
    try:
        raw = json.loads((outputs / METRICS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoaderError(f"the engine wrote no {METRICS_FILE}; a fine-tuning engine must report its loss") from None
    except (OSError, ValueError) as exc:
        raise LoaderError(f"the engine's {METRICS_FILE} is not readable JSON ({exc}); fix the engine") from None
    if not isinstance(raw, dict):
        raise LoaderError(f"the engine's {METRICS_FILE} must hold a JSON object")
    curve = raw.get("loss_curve")
    if "final_loss" in raw:
        loss = _decimal(raw["final_loss"], "final_loss")
    elif isinstance(curve, list) and curve and isinstance(curve[-1], dict):
        loss = _decimal(curve[-1].get("loss"), "the last loss_curve loss")
    else:
        raise LoaderError(f"the engine's {METRICS_FILE} has neither final_loss nor a loss_curve; fix the engine")
    evaluation = raw.get("evaluation")
    scores = [
        side.get("f1") if isinstance(side, dict) else None
        for side in ((evaluation.get("base"), evaluation.get("tuned")) if isinstance(evaluation, dict) else ())
    ]
    if len(scores) == 2 and all(score is not None for score in scores):
        return Metrics(loss, EVAL_METRIC, _decimal(scores[0], "evaluation.base.f1"), _decimal(scores[1], "f1"))
    return Metrics(loss, NO_EVAL, Decimal(0), Decimal(0))
