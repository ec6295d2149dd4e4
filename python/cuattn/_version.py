# The package version, defined here only: pyproject.toml reads it (scikit-build-core's regex
# metadata provider) and CMakeLists.txt reads it for project(VERSION) and the C++ CUATTN_VERSION.
__version__ = "0.1.0"
