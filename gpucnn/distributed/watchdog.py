"""Waiting for a collective with a deadline, and naming the rank that never came.

A blocking MPI call waits forever for a rank that hangs (or dies under a launcher that does
not clean up). Here every collective is nonblocking and polled until a deadline; past it,
the waiting ranks tell each other they are alive on a side channel, and whoever is not
heard from within a grace period is named in the error.
"""
import time

ALIVE_TAG = 7001
# After the deadline, how long live ranks listen for each other: other waiting ranks reach
# their own deadline soon after (they entered the collective within one step's imbalance).
MAX_GRACE = 10.0
# Poll without pause this long first (a collective on one node often completes within it),
# then sleep between polls: on a shared CPU the rank we wait for needs the core.
SPIN = 2e-3


class CollectiveTimeout(RuntimeError):
    """A collective that did not complete within the deadline; the message names the missing ranks."""


class Watchdog:
    def __init__(self, MPI, comm, timeout):
        self.MPI, self.timeout = MPI, float(timeout)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.side = comm.Dup()  # the "alive" notes must not match any collective's traffic

    def wait(self, request, what):
        """Return when `request` completes; raise CollectiveTimeout past the deadline."""
        self.poll(request.Test, what)

    def poll(self, done, what):
        """Call done() (which must make progress) until it returns true or the deadline passes."""
        start = time.monotonic()
        deadline = start + self.timeout
        pause = 1e-5
        while not done():
            now = time.monotonic()
            if now - start < SPIN:
                continue
            if now > deadline:
                missing = self.missing_ranks()
                who = (f"no word from rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                       f"(hung or dead)") if missing else "every rank is alive but the collective did not complete"
                raise CollectiveTimeout(f"rank {self.rank}: {what} did not complete within {self.timeout:g} s: {who}")
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)

    def missing_ranks(self):
        """The ranks not heard from on the side channel within the grace period after the deadline."""
        peers = [r for r in range(self.size) if r != self.rank]
        # Kept on self: a pending send's buffer must outlive it, and the process aborts next anyway.
        self.notes = [self.side.isend(self.rank, dest=r, tag=ALIVE_TAG) for r in peers]
        heard, status = set(), self.MPI.Status()
        end = time.monotonic() + min(self.timeout, MAX_GRACE)
        while len(heard) < len(peers) and time.monotonic() < end:
            if self.side.iprobe(source=self.MPI.ANY_SOURCE, tag=ALIVE_TAG, status=status):
                heard.add(self.side.recv(source=status.Get_source(), tag=ALIVE_TAG))
            else:
                time.sleep(0.01)
        return [r for r in peers if r not in heard]
