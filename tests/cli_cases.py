"""Run several jaxgan command lines in this one process (one JAX start-up), each with its own
stdout and stderr: fast subprocess tests of bad input and faults.

Usage: python tests/cli_cases.py 'PROGRAM ARGS OF CASE 1' ['PROGRAM ARGS OF CASE 2' ...]
PROGRAM: train | generate | evaluate | convert | torch_ref.train. Prints one JSON object per case,
one per line: {"argv": [...], "status": N, "stdout": "...", "stderr": "...", "seconds": S}.
Everything the case writes to file descriptors 1 and 2 (Python, C++ and background threads
alike) is its output. `train` reads the first JAXGAN_TEST_IMAGES images of each dataset when
that is set (as tests/subset_train.py does).
"""

import importlib
import json
import os
import shlex
import sys
import tempfile
import time
import traceback

PROGRAMS = {
    "train": "jaxgan.main",
    "generate": "jaxgan.generate",
    "evaluate": "jaxgan.evaluate",
    "convert": "jaxgan.convert",
    "torch_ref.train": "torch_ref.train",
}


def run_case(main, argv: list[str]) -> dict:
    """main(argv) with fds 1 and 2 sent to files of their own; its status, output and duration."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        start = time.perf_counter()
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code
        except BaseException:
            traceback.print_exc()
            status = "exception"
        finally:
            seconds = time.perf_counter() - start
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {
            "argv": argv,
            "status": status,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
            "seconds": round(seconds, 3),
        }


def program_main(program: str):
    """The entry point of `program`; train's reads JAXGAN_TEST_IMAGES images when that is set."""
    main = importlib.import_module(PROGRAMS[program]).main
    if program != "train" or not os.environ.get("JAXGAN_TEST_IMAGES"):
        return main
    from subset_train import load_subset

    return lambda argv: main(argv, load_dataset=load_subset)


if __name__ == "__main__":
    for case in sys.argv[1:]:
        program, *argv = shlex.split(case)
        print(json.dumps(run_case(program_main(program), argv)), flush=True)
