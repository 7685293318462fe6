"""Build the Cython batching core as ``volley.scheduler._batchcore_c``."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

ext = Extension(
    "volley.scheduler._batchcore_c",
    ["server/volley/scheduler/_batchcore_c.pyx"],
    include_dirs=[numpy.get_include()],
)
directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "embedsignature": True,
}
setup(ext_modules=cythonize([ext], compiler_directives=directives))
