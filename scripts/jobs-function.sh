# shellcheck shell=sh
# The `jobs` command as typed, in bash and zsh.
#
# `jobs` is also a builtin of bash, zsh and sh, and a builtin runs before any program on PATH (`command jobs`
# and `\jobs` run it too); only a shell function runs before the builtin. This one sends the product's
# subcommands (and --help) to the product's CLI and leaves the builtin's own uses to the builtin: no
# argument, its options (-l, -p, -r, -s) and job specs (%1). Outside an environment that has the CLI
# (after `deactivate`), every use goes to the builtin.
#
# The virtual environment's activation sources this file (`make install`); the Docker image sources it
# from /etc/bash.bashrc.
jobs() {
    case "${1-}" in
        "" | %* | -[!-]*) builtin jobs "$@" ;;
        *)
            if [ -n "${VIRTUAL_ENV-}" ] && [ -x "${VIRTUAL_ENV}/bin/jobs" ]; then
                "${VIRTUAL_ENV}/bin/jobs" "$@"
            else
                builtin jobs "$@"
            fi
            ;;
    esac
}
