#!/bin/sh
# Runs protoc-c for one .proto and copies the two outputs to the flat paths meson expects.
# usage: protoc-c-gen.sh GENDIR OUT_C OUT_H PROTO_FILE_REL -I... (include args)
set -e
gendir=$1; out_c=$2; out_h=$3; rel=$4; shift 4
mkdir -p "$gendir"
protoc-c "$@" --c_out="$gendir" "$rel"
base=${rel%.proto}
cp "$gendir/$base.pb-c.c" "$out_c"
cp "$gendir/$base.pb-c.h" "$out_h"
