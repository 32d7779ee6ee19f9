# MACSERVE_SANITIZE=address|undefined|address,undefined|thread instruments every C++ target.
if(MACSERVE_SANITIZE)
  foreach(flag -fsanitize=${MACSERVE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${flag}>)
  endforeach()
  add_link_options(-fsanitize=${MACSERVE_SANITIZE})
  message(STATUS "macserve: sanitizers ${MACSERVE_SANITIZE}")
endif()
