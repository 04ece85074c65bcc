# Shared by the scripts: one target directory that outlives a fresh clone,
# so CI and later work on the same machine rebuild incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/duckgate/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
