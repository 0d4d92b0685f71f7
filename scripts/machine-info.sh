#!/usr/bin/env bash
# Prints a description of this machine and build for a results directory: figures mean little
# without the hardware, kernel and versions that produced them.
echo "date:      $(date -u '+%F %T UTC')"
echo "commit:    $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
echo "cpu:       $(nproc) x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "memory:    $(free -h | awk '/^Mem:/ {print $2}')"
echo "kernel:    $(uname -sr)"
echo "rustc:     $(rustc --version 2>/dev/null)"
echo "redis:     $(redis-benchmark --version 2>/dev/null | head -1)"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (at the end of the run)"
