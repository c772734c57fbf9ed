# Writes version.hpp with the commit the tree is at, on every build (not only at configure time,
# where the SHA went stale as soon as HEAD moved). configure_file rewrites the header only when
# its text changes, so an unchanged HEAD recompiles nothing.
#   cmake -DSRC=version.hpp.in -DDST=.../version.hpp -DPROJECT_VERSION=x.y.z -DGIT_DIR=repo
#         -P cmake/GitVersion.cmake
execute_process(
  COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY ${GIT_DIR}
  OUTPUT_VARIABLE SPARGE_GIT_SHA OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT SPARGE_GIT_SHA)
  set(SPARGE_GIT_SHA "unknown")
else()
  # Tracked files changed since HEAD: say so rather than claim the commit.
  execute_process(
    COMMAND git status --porcelain --untracked-files=no
    WORKING_DIRECTORY ${GIT_DIR}
    OUTPUT_VARIABLE _dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_dirty)
    string(APPEND SPARGE_GIT_SHA "-dirty")
  endif()
endif()
configure_file(${SRC} ${DST} @ONLY)
