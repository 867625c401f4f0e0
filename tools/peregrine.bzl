"""Build macros for Peregrine: one place for copts, warnings and test sizes."""

PG_COPTS = [
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
]

def pg_cc_library(name, copts = [], **kwargs):
    native.cc_library(name = name, copts = PG_COPTS + copts, **kwargs)

def pg_cc_binary(name, copts = [], **kwargs):
    native.cc_binary(name = name, copts = PG_COPTS + copts, **kwargs)

def pg_cc_test(name, copts = [], deps = [], size = "small", **kwargs):
    """A GoogleTest test linked with gtest_main."""
    native.cc_test(
        name = name,
        copts = PG_COPTS + copts,
        deps = deps + ["//third_party/system:gtest_main"],
        size = size,
        **kwargs
    )

def pg_cc_benchmark(name, copts = [], deps = [], smoke_args = [], **kwargs):
    """A Google Benchmark binary, plus `<name>_smoke`, a test that runs it once.

    The smoke test runs each benchmark for a minimal time so that a broken
    benchmark fails `bazel test //...` (as Envoy does).
    """
    native.cc_binary(
        name = name,
        copts = PG_COPTS + copts,
        deps = deps + ["//third_party/system:benchmark_main"],
        **kwargs
    )
    native.sh_test(
        name = name + "_smoke",
        srcs = ["//tools:bench_smoke.sh"],
        args = ["$(location :%s)" % name] + smoke_args,
        data = [":" + name],
        size = "medium",
    )
