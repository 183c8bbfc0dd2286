"""``python -m chat_engine``: serve the job named by ``CLOISTER_JOB`` until killed.

Once the model is loaded and the port is bound, the engine appends ``{"ready": true, "port": n, "model": id}`` to
its progress file, which is how the loader learns where and when to connect. A job the engine cannot do exits
with code 2 and one line ``error[<code>]: <message>`` on stderr, like every built-in engine.
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
        config = prepare(job)
        from .serve import serve  # torch and transformers take seconds to import: only once the job is known good

        serve(job, config)
    except CloisterError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
