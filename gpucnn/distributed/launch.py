"""The mpiexec to start ranks with: the one the MPICH wheel put next to this Python, never
whatever MPI the system has on its PATH (it may be another MPI than mpi4py was loaded with)."""
import os
import sys
import sysconfig

from .world import INSTALL_HINT


def mpiexec():
    """Path of the environment's mpiexec; FileNotFoundError naming the extra when it has none."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        path = os.path.join(folder, "mpiexec")
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"no mpiexec in {sysconfig.get_path('scripts')}: {INSTALL_HINT}")
