"""Every kernel module compiled as a user's CuPy compiles it: by the NVRTC of the pip wheels of
CUDA 12 and 13, with CuPy's options and include path (only the runtime wheel's headers), on
this machine, which has no GPU (`gpucnn.backends.cuda.nvrtc`). Each build must succeed, lower
every name expression and spill nothing; docs/kernels.md's resource tables are its report.

The builds are cached on disk (gpucnn/nvrtc in the user's cache directory), keyed by the
text, options, arch and NVRTC: a run after a kernel edit rebuilds only the edited module.
"""
import importlib.util
from pathlib import Path

import pytest

import gpucnn.backends.cuda as cuda_ops
from gpucnn.backends.cuda import nvrtc

MAJORS = (12, 13)
SOURCE = 'extern "C" __global__ void __launch_bounds__(32) copy(const float* x, float* y) { y[threadIdx.x] = x[0]; }\n'


def _kernel_resources():
    """scripts/kernel_resources.py, loaded by path: scripts/ is not a package, and putting it on
    sys.path would shadow tests/sanitizer_bugs.py with scripts/sanitizer_bugs.py."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "kernel_resources.py"
    spec = importlib.util.spec_from_file_location("kernel_resources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ci_builds():
    """{(CUDA major, arch): [Build of each module]} for the CI archs, built once, in parallel."""
    major_of = {nvrtc.version(major): major for major in MAJORS}
    builds = {}
    for build in nvrtc.compile_modules(nvrtc.CI_ARCHS, MAJORS):
        builds.setdefault((major_of[build.nvrtc], build.arch), []).append(build)
    return builds


def assert_clean(builds):
    problems = [p for build in builds for p in build.problems()]
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("arch", nvrtc.CI_ARCHS)
@pytest.mark.parametrize("major", MAJORS)
def test_every_module_compiles_lowers_and_spills_nothing(ci_builds, major, arch):
    builds = ci_builds[major, arch]
    assert [b.filename for b in builds] == list(cuda_ops.KERNEL_FILES)
    assert_clean(builds)


@pytest.mark.slow
@pytest.mark.parametrize("major", MAJORS)
def test_every_module_compiles_for_every_arch_cupy_runs_on(major):
    assert_clean(nvrtc.compile_modules(nvrtc.CUPY_ARCHS[major], (major,)))


def test_the_wheels_nvrtc_loads_without_a_gpu_and_knows_cupys_archs():
    for major, version in zip(MAJORS, ("12.9", "13.0")):
        assert nvrtc.version(major) == version
        assert set(nvrtc.CUPY_ARCHS[major]) <= set(nvrtc.supported_archs(major))


def test_the_options_and_include_path_are_cupys():
    """RawModule's options for a module (CuPy 14.2 assemble_cupy_compiler_options and
    _compile_with_cache_cuda): ours, the runtime wheel's headers, -ftz=true, the arch and
    --device-as-default-execution-space. The headers are the runtime wheel's only: CUDA's
    <mma.h> there needs crt/mma.h, which ships in another wheel, so including it fails as it
    fails for a pip-only user."""
    for major in MAJORS:
        include = nvrtc.include_folder(major)
        assert (include / "cuda_runtime.h").is_file()
        assert nvrtc.cupy_options(major, 86) == (*cuda_ops.KERNEL_OPTIONS, f"-I{include}", "-ftz=true", "-arch=sm_86",
                                                 "--device-as-default-execution-space")
        build = nvrtc.compile_source("#include <mma.h>\n" + SOURCE, "mma.cu", (), 80, major)
        assert 'cannot open source file "crt/mma.h"' in build.error


def test_a_failure_names_the_module_arch_nvrtc_and_first_error():
    build = nvrtc.compile_source(SOURCE.replace("x[0]", "z[0]"), "broken.cu", (), 90, 12)
    assert build.problems() == ['broken.cu (sm_90, NVRTC 12.9): broken.cu(1): error: identifier "z" is undefined']


def test_a_name_expression_lowers_or_fails_the_build_and_a_spill_is_refused():
    # 64 values live in a thread allowed 32 registers (1024 threads, 2 blocks an SM).
    source = """template <typename T> __global__ void __launch_bounds__(1024, 2) keep(const T* x, T* y, int n)
    {
        T v[64];
        for (int k = 0; k < 64; ++k) v[k] = x[k * n + threadIdx.x];
        for (int k = 0; k < 64; ++k) y[threadIdx.x] += v[k] * v[63 - k] / v[(k * 7) % 64];
    }
    """
    build = nvrtc.compile_source(source, "keep.cu", ("keep<float>",), 80, 13)
    assert build.lowered == {"keep<float>": "_Z4keepIfEvPKT_PS0_i"}
    assert "keep<float> spills" in " ".join(build.problems())
    build = nvrtc.compile_source(source, "keep.cu", ("keep<float>", "kept<float>"), 80, 13)
    assert build.problems() == ['keep.cu (sm_80, NVRTC 13.0): __nv_name_map(3): error: identifier "kept" is undefined']


def test_builds_are_cached_by_text_options_arch_and_nvrtc(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = nvrtc.compile_source(SOURCE, "copy.cu", (), 80, 12)
    assert len(list((tmp_path / "gpucnn" / "nvrtc").iterdir())) == 1

    def refuse(*args):
        raise AssertionError("compiled again")
    monkeypatch.setattr(nvrtc._Library, "compile", refuse)
    assert nvrtc.compile_source(SOURCE, "copy.cu", (), 80, 12) == first
    for changed in ((SOURCE + "\n", "copy.cu", (), 80, 12), (SOURCE, "copy.cu", (), 90, 12),
                    (SOURCE, "copy.cu", (), 80, 13)):
        with pytest.raises(AssertionError, match="compiled again"):
            nvrtc.compile_source(*changed)


def test_ptxas_reports_are_read_and_cudas_occupancy_rules_applied():
    """The report's format (NVRTC 13.0 --ptxas-options=-v) and cuda_occupancy.h's rules, on
    cases worked by hand."""
    name = "_Z14conv2d_forwardIfLi64ELi64ELi8ELi4ELi4EEvPKfS1_"
    log = (f"ptxas info    : Compiling entry function '{name}' for 'sm_90'\n"
           f"ptxas info    : Function properties for {name}\n"
           "ptxas         .     16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n"
           "ptxas info    : Used 167 registers, used 1 barriers, 8704 bytes smem, 400 bytes cmem[0]\n"
           "ptxas info    : Compile time = 20.685 ms\n")
    assert nvrtc.entries(log, {name: 256}) == {name: nvrtc.Entry(registers=167, shared=8704, stack=16, spill_stores=4,
                                                         spill_loads=8, barriers=1, threads=256)}
    resources = _kernel_resources()

    def entry(registers, shared, barriers, threads):
        return nvrtc.Entry(registers, shared, 0, 0, 0, barriers, threads)
    # 167 registers: 5376 a warp (rounded to 256), 3 warps of 16384 per sub-partition, 12 an SM.
    assert resources.occupancy(90, entry(167, 8704, 1, 256)) == (1, "registers", 0.125)
    assert resources.occupancy(90, entry(32, 0, 0, 256)) == (8, "threads + registers", 1.0)
    # 48 KiB + the 1 KiB reserved: 4 blocks in sm_90's 228 KiB, 3 in sm_80's 164 KiB.
    assert resources.occupancy(90, entry(32, 49152, 1, 128))[:2] == (4, "shared memory")
    assert resources.occupancy(80, entry(32, 49152, 1, 128))[:2] == (3, "shared memory")
    assert resources.occupancy(80, entry(16, 0, 0, 32))[:2] == (32, "blocks")


def test_kernels_md_resource_tables_are_the_nvrtc_builds_report(ci_builds):
    """docs/kernels.md's registers, shared memory and occupancy are what NVRTC reports for
    today's kernels: regenerated from the builds above, the block must be unchanged."""
    resources = _kernel_resources()
    builds = [b for arch in resources.ARCHS for b in ci_builds[resources.NVRTC_MAJOR, arch]]
    text = resources.DOC.read_text()
    assert resources.replace_block(text, resources.block(builds, resources.compiler())) == text, (
        f"docs/kernels.md's resource tables differ from the NVRTC builds' report: run {resources.REFRESH}")
