#!/bin/bash
mkdir -p "$OUT" /tmp/mm
cp .stage/mm2/b/* /tmp/mm/ && ls -la /tmp/mm
