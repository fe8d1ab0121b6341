#!/bin/bash
# The next part of the weight wheels (.stage/mm2/b or c, carried) to /tmp/mm.
mkdir -p "$OUT" /tmp/mm
cp .stage/mm2/$1/* /tmp/mm/ && ls -la /tmp/mm
