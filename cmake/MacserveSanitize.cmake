# MACSERVE_SANITIZE=address|undefined|address,undefined|thread instruments every target.
if(MACSERVE_SANITIZE)
  set(_san_flags -fsanitize=${MACSERVE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${_san_flags}>)
  add_link_options(${_san_flags})
  message(STATUS "macserve: sanitizers ${MACSERVE_SANITIZE}")
endif()
