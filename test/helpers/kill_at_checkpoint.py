"""Run a training command and SIGKILL it right after it has saved the checkpoint of a given step.

    python test/helpers/kill_at_checkpoint.py STEP MODULE [ARGS ...]

The kill lands at the same point of the run on any machine, however fast or loaded, unlike polling for a
checkpoint from outside and killing whenever it shows up.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys


def main() -> None:
    kill_step, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    from vlt_training.training import checkpoint

    save = checkpoint.save_checkpoint

    def save_then_die(run_dir, step, *rest, **kwargs):
        path = save(run_dir, step, *rest, **kwargs)
        if int(step) == kill_step:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like a lost machine
        return path

    checkpoint.save_checkpoint = save_then_die
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
