# The peer's llama-server embeds its web page through llama.cpp's scripts/xxd.cmake, which the
# archive in ../shared/peers lacks; this one does the same job, written for us. The GPU calls copy
# it to PEER_DIR/scripts/ before `llamacpp.sh build`.
#   cmake -DINPUT=public/index.html.gz -DOUTPUT=index.html.gz.hpp -P xxd.cmake
# writes `unsigned char index_html_gz[] = {...}; unsigned int index_html_gz_len = N;`
get_filename_component(name "${INPUT}" NAME)
string(REGEX REPLACE "[^A-Za-z0-9_]" "_" name "${name}")
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n_bytes "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}" "unsigned char ${name}[] = {${bytes}};\nunsigned int ${name}_len = ${n_bytes};\n")
