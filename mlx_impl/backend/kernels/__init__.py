"""The CPU kernels' C++ sources (one file per concern, CMakeLists.txt lists them);
scripts/build_cpu_kernels.sh builds them into `_kernels*.so` here, which ../native.py loads."""
