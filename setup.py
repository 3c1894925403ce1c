"""Build lbcore: compile lbcore/_fast/*.pyx with Cython unless LBCORE_NO_EXTENSIONS=1.

Cython is a build requirement only; generated .c files are not committed.
"""

import os
import sys
from glob import glob

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("LBCORE_NO_EXTENSIONS"))

if NO_EXTENSIONS:
    print("*** lbcore: LBCORE_NO_EXTENSIONS is set: pure-Python build", file=sys.stderr)
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension(
                f"lbcore._fast.{os.path.basename(path)[:-4]}",
                [path],
                extra_compile_args=["-O3"],
            )
            for path in sorted(glob("lbcore/_fast/*.pyx"))
        ],
        compiler_directives={
            "language_level": 3,
            # Hot methods as plain PyMethodDef (METH_O / METH_FASTCALL), not
            # cyfunctions: a pre-bound pick costs ~13 ns instead of ~20 ns.
            "binding": False,
            "embedsignature": True,
        },
    )
    print(f"*** lbcore: compiling {len(ext_modules)} Cython modules", file=sys.stderr)

setup(ext_modules=ext_modules)
