"""``python -m unspool._trigger SNAPSHOT_ID RUN_CONFIGURATION_FILE [HANDSHAKE_FILE]``.

Runs one snapshot in this process (``Client().trigger_pipeline`` starts it; see
``_snapshots.py``). Exit codes: 0 the run completed, 1 the run failed, 2 no run was started
(the reason is in the handshake file and on stderr). The run configuration comes in a JSON
file only its owner can read, deleted once read: never on the command line, which any user
of the machine can read in ``/proc/PID/cmdline``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from ._binding import bind_parameters
from ._engine import Run
from ._errors import mask_secrets
from ._models import StoreReader
from ._progress import console_progress
from ._snapshots import error_to_json, snapshot_pipeline, write_handshake
from ._stores import close_stores, open_stores


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    snapshot_id, config_file = argv[0], argv[1]
    handshake = argv[2] if len(argv) == 3 else None
    try:
        with open(config_file) as f:
            run_configuration = json.load(f)
        os.unlink(config_file)
        stores = open_stores()
        snapshot = StoreReader(stores).get_snapshot(snapshot_id)
        pipeline = snapshot_pipeline(snapshot, run_configuration)
        run_holder: list[Run] = []
        user_on_init = pipeline.config.on_init

        def on_init() -> None:
            # the run row exists now: record which snapshot started it
            run = run_holder[0]
            run.stores.metadata.update_run(run.id, snapshot_id=snapshot.id)
            if user_on_init is not None:
                user_on_init()

        pipeline = type(pipeline)(pipeline.func, dataclasses.replace(pipeline.config, on_init=on_init))
        params = bind_parameters(pipeline, (), {})
        run = Run(pipeline, params, stores)
        run_holder.append(run)
    except Exception as exc:
        write_handshake(handshake, {"error": error_to_json(exc)})
        print(f"unspool: cannot run snapshot {snapshot_id}: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
    write_handshake(handshake, {"run_id": run.id})
    return _execute(run)


def _execute(run: Any) -> int:
    try:
        with console_progress(run):
            run.execute()
    except Exception as exc:  # recorded on the run; the caller reads it from the store
        print(f"unspool: run {run.name} failed: {mask_secrets(str(exc))}", file=sys.stderr)
        return 1
    finally:
        close_stores()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
