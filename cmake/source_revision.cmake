# Writes the source revision (git describe --always --dirty) into a header, at every build, and
# touches it only when the revision changed: an output file always names the code that wrote it.
#   cmake -DSOURCE_DIR=<repo> -DOUTPUT=<header> -P source_revision.cmake
set(revision "unknown")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" describe --always --dirty --abbrev=12
                  WORKING_DIRECTORY "${SOURCE_DIR}" OUTPUT_VARIABLE described
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE status)
  if(status EQUAL 0 AND described)
    set(revision "${described}")
  endif()
endif()
set(text "#pragma once\n// Generated at build time by cmake/source_revision.cmake.\nnamespace ketasim {\ninline constexpr const char* kSourceRevision = \"${revision}\";\n}  // namespace ketasim\n")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" current)
endif()
if(NOT current STREQUAL text)
  file(WRITE "${OUTPUT}" "${text}")
endif()
