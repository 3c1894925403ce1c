#!/bin/sh
# Which scheduler for sticky clients?  Replays examples/trace.csv (1,500 requests from
# 120 clients over a minute, a few clients far busier than the rest) through weighted
# least connection and Maglev with 30 s sessions, while 10.0.0.3 leaves at 20 s and
# 10.0.0.7 joins at 40 s.  Prints the table; report.json and the pictures go to
# simulate-report/.  Run from the repository's top directory.
set -eu
lbcore simulate --trace examples/trace.csv --endpoints 6 --weights 1,1,2 \
    --event 20s:remove:10.0.0.3:8080 --event 40s:add:10.0.0.7:8080 \
    --schedulers wlc,mh+affinity --affinity-timeout 30 --out simulate-report
