# The server binary carries one protobuf runtime, private to it: it neither exports nor imports a
# google::protobuf symbol (libsentencepiece.so exports its own protobuf-lite under the same names,
# and binding across the two crashes), and it does not load libprotobuf.so.
# Usage: cmake -DBINARY=build/bin/macserve -P check_symbols.cmake
find_program(NM nm REQUIRED)
execute_process(COMMAND ${NM} -D ${BINARY} OUTPUT_VARIABLE dyn RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nm -D ${BINARY} failed (${rc})")
endif()
string(REGEX MATCHALL "[^\n]*_ZN6google8protobuf[^\n]*" hits "${dyn}")
list(LENGTH hits n)
if(n GREATER 0)
  list(SUBLIST hits 0 5 first)
  message(FATAL_ERROR "${BINARY} has ${n} google::protobuf dynamic symbols, e.g.\n${first}")
endif()
execute_process(COMMAND readelf -d ${BINARY} OUTPUT_VARIABLE needed RESULT_VARIABLE rc)
if(rc EQUAL 0 AND needed MATCHES "libprotobuf")
  message(FATAL_ERROR "${BINARY} loads libprotobuf.so")
endif()
message(STATUS "${BINARY}: no google::protobuf dynamic symbols, no libprotobuf.so")
