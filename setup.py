"""Build the Cython core (csrc/) as ``volley._batchcore``."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

ext = Extension("volley._batchcore", ["csrc/_batchcore.pyx"], include_dirs=[numpy.get_include()])
directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "embedsignature": True,
}
setup(ext_modules=cythonize([ext], compiler_directives=directives))
