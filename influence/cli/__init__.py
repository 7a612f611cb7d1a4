"""Command line: gan-influence train | finetune | runs | estimate | explain | cleanse | export | validate | sweep.

Bad input prints one line starting with 'error:' and exits with status 2; nothing is written. `parser`: the
commands and their options; `follow`: a job run here or followed; one module per group of commands.
"""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: threads that spin while waiting starve each other once anything else
# runs on the cores (as the app's job workers, jobs.start_background). Same thread count, same bits.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .. import allocator, jobs, store  # noqa: E402, F401  (jobs: the commands' job runner, patched by tests)
from ..errors import Cancelled, InfluenceError  # noqa: E402
from ..removal import read_removal_csv  # noqa: E402, F401  (also the CLI's public parser)
from .curating import MAX_REMOVAL_FILE_BYTES, cmd_cleanse, cmd_export  # noqa: E402, F401
from .estimating import cmd_estimate, cmd_explain  # noqa: E402
from .parser import build_parser  # noqa: E402
from .training import cmd_finetune, cmd_relocate, cmd_runs, cmd_train  # noqa: E402
from .validating import cmd_sweep, cmd_validate  # noqa: E402


COMMANDS = {"train": cmd_train, "finetune": cmd_finetune, "runs": cmd_runs, "relocate": cmd_relocate,
            "estimate": cmd_estimate, "explain": cmd_explain, "cleanse": cmd_cleanse, "validate": cmd_validate,
            "sweep": cmd_sweep, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    allocator.tune_this_process()  # every command runs the engine here or waits on a job that does
    try:
        args = build_parser().parse_args(argv)
        root = store.store_root(args.store)
        if args.cluster:  # read by the execution layer of the job, here or in the job's own process
            from ..execution import ENV_CLUSTER

            os.environ[ENV_CLUSTER] = args.cluster
        return COMMANDS[args.command](args, root)
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except InfluenceError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2


def one_line(message: str) -> str:
    """The message with newlines and other unprintable characters (often echoed user input) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message.strip())
