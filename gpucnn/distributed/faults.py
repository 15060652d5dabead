"""One rank's failure stops every rank, with its error shown, instead of leaving the others
waiting in a collective for a peer that will never come."""
import functools
import sys
import traceback

from .world import current


def abort_on_error(main):
    """Wrap a distributed program's entry point: an exception (or a non-zero exit) on any rank
    prints the error with the rank's number and aborts the whole MPI job with its exit code."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BaseException as e:
            world = current()
            exiting = isinstance(e, SystemExit)
            if world is None or world.size == 1 or (exiting and e.code in (0, None)):
                raise
            if exiting:  # argparse's one-line error was printed already
                code = e.code if isinstance(e.code, int) else 1
                if not isinstance(e.code, int):
                    print(e.code, file=sys.stderr)
            else:
                traceback.print_exc()
                code = 1
            print(f"rank {world.rank} of {world.size} failed: stopping every rank", file=sys.stderr, flush=True)
            world.abort(code)
    return run
