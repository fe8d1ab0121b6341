#!/bin/bash
# The weight wheels' first three parts (carried one a call as .stage/mm2/$1) to /tmp/mm.
mkdir -p "$OUT" /tmp/mm
cp .stage/mm2/$1/* /tmp/mm/ && ls /tmp/mm
