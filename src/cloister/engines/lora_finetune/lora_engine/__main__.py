"""``python -m lora_engine``: run the job named by ``CLOISTER_JOB``; exit 0 when the outputs are written.

A job the engine cannot do (bad ``job.json``, parameters, inputs or checkpoint) exits with code 2 and one line
``error[<code>]: <message>`` on stderr, which the loader shows as the reason the order failed.
"""

from __future__ import annotations

import sys

from cloister.engines.job import JobSpec
from cloister.errors import CloisterError

from .config import prepare

EXIT_REFUSED = 2


def main() -> int:
    try:
        job = JobSpec.from_env()
        prepared = prepare(job)
        from .run import run  # torch and transformers take seconds to import: only once the job is known good

        outcome = run(job, prepared)
    except CloisterError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.seconds.items())
    print(f"lora_finetune done: {outcome.metrics['steps']} steps; {phases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
