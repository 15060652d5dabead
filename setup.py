"""Build hook: the CUDA kernels go into every wheel, however the source tree was checked out.

The kernels' one real copy is the top-level cuda_kernels/; gpucnn/cuda_kernels is a symbolic
link to it, so that a source tree loads them as package data. A checkout without symbolic
links (`git -c core.symlinks=false clone`, Windows without developer mode) turns that link
into a small text file, and a plain build would ship a wheel with no kernels. So the wheel's
build and the sdist copy cuda_kernels/ into the package themselves (the sdist then runs its
tests in place too), and fail when there is nothing to copy.
Everything else is configured in pyproject.toml.
"""
import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_SOURCES = os.path.join(HERE, "cuda_kernels")


def kernel_files(folder):
    """The kernel files (*.cu) and the project headers they include (*.cuh)."""
    return sorted(glob.glob(os.path.join(folder, "*.cu")) + glob.glob(os.path.join(folder, "*.cuh")))


def copy_kernels(target):
    """Copy the kernels into the folder `target` (replacing the link's text-file form), or fail."""
    sources = kernel_files(KERNEL_SOURCES)
    if not any(path.endswith(".cu") for path in sources):
        raise SetupError(f"no CUDA kernels (*.cu) in {KERNEL_SOURCES}: refusing to build gpucnn without them")
    if os.path.lexists(target) and not os.path.isdir(target):
        os.remove(target)
    os.makedirs(target, exist_ok=True)
    for path in sources:
        shutil.copyfile(path, os.path.join(target, os.path.basename(path)))
    shipped = [os.path.basename(p) for p in kernel_files(target)]
    if shipped != [os.path.basename(p) for p in sources]:
        raise SetupError(f"{target} holds {shipped}, not the kernels of {KERNEL_SOURCES}")


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        copy_kernels(os.path.join(self.build_lib, "gpucnn", "cuda_kernels"))


class SdistWithKernels(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        copy_kernels(os.path.join(base_dir, "gpucnn", "cuda_kernels"))


setup(cmdclass={"build_py": BuildPyWithKernels, "sdist": SdistWithKernels})
