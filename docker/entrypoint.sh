#!/bin/sh
# Entrypoint of the lmcache images. Flags alone run the server:
#   docker run IMAGE --l1-size-gb 1 --eviction-policy LRU        ->  lmcache server --l1-size-gb 1 ...
# Anything else runs as given, so the quick start's form and other commands work too:
#   docker run IMAGE /opt/venv/bin/lmcache server --l1-size-gb 60 --eviction-policy LRU --port 6555
#   docker run IMAGE lmcache coordinator --host 0.0.0.0
set -eu
case "${1:-}" in
    "" | -*) exec lmcache server "$@" ;;
    *) exec "$@" ;;
esac
