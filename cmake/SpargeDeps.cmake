# Every dependency comes from Debian/Ubuntu packages, the CUDA Toolkit, or the torch wheel.
# Nothing is downloaded at configure time.

find_package(CUDAToolkit 12.4 REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(fmt REQUIRED CONFIG)
find_package(CLI11 REQUIRED CONFIG)
find_package(yaml-cpp REQUIRED CONFIG)
find_package(nlohmann_json REQUIRED CONFIG)
find_package(Threads REQUIRED)

# yaml-cpp 0.7 (Debian 12) exports `yaml-cpp`; 0.8 (Ubuntu 24.04) exports `yaml-cpp::yaml-cpp`.
if(TARGET yaml-cpp::yaml-cpp)
  set(SPARGE_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(SPARGE_YAML_TARGET yaml-cpp)
endif()

# libtorch from the torch wheel: ask the interpreter for its CMake prefix unless Torch_DIR is set.
if(NOT Torch_DIR)
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "sparge needs libtorch from the torch==2.11.0 wheel: "
                        "`${Python3_EXECUTABLE} -c 'import torch'` failed. Run scripts/setup.sh.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()
# TorchConfig appends its own CUDA flags; keep ours authoritative.
set(_sparge_saved_cuda_flags "${CMAKE_CUDA_FLAGS}")
# Without an explicit list, Caffe2Config try_runs a program to detect GPUs (fails with none).
set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
find_package(Torch REQUIRED CONFIG)
set(CMAKE_CUDA_FLAGS "${_sparge_saved_cuda_flags}")
# Caffe2 sets CMAKE_CUDA_ARCHITECTURES OFF (it passes its own -gencode flags, dropped above).
set(CMAKE_CUDA_ARCHITECTURES ${SPARGE_CUDA_ARCHS})

if(SPARGE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(SPARGE_BUILD_BENCHMARKS)
  find_package(benchmark REQUIRED CONFIG)
endif()

# The torch wheel ships fmt 12 headers in its include directory, which comes before /usr/include.
# Point a non-system include directory (searched before every -isystem one) at the fmt we link.
get_target_property(_fmt_inc fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
list(GET _fmt_inc 0 _fmt_inc)
set(SPARGE_FMT_SHIM ${CMAKE_BINARY_DIR}/fmt_shim)
file(MAKE_DIRECTORY ${SPARGE_FMT_SHIM})
if(NOT EXISTS ${SPARGE_FMT_SHIM}/fmt)
  file(CREATE_LINK ${_fmt_inc}/fmt ${SPARGE_FMT_SHIM}/fmt SYMBOLIC)
endif()
