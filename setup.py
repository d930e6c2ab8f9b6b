"""Build the optional C fold (``spanjournal._speedups``); everything else is in pyproject.toml.

The extension makes ``pending`` several times faster on large journals. It is
optional: where it cannot be compiled (no C compiler), the install goes on
and the reader uses its pure-Python fold, with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "spanjournal._speedups",
            ["src/spanjournal/_speedups.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
