#!/usr/bin/env bash
# Makes the Secrets that the manifests under manifests/ mount (see manifests/README.md,
# "Tokens"):
#   memq-token-reader, memq-token-producer, memq-token-consumer, memq-token-admin
#       key `token`: one random token per role, for the pods (and people) of that role
#   memq-tokens
#       key `tokens`: the queue server's tokens file, one `NAME ROLE QUEUES sha256:HEX` line per
#       role (and per role's previous token during a rotation): only digests, never a token
#
#   scripts/make-tokens.sh [--namespace NS] [--queues GLOB] [--rotate | --retire-previous] [--print]
#
#   --namespace NS      the namespace of the Secrets (default: the kubeconfig's current one)
#   --queues GLOB       the queues the reader, producer and consumer tokens cover (default `*`;
#                       e.g. 'keygen*'); the admin token always covers `*` (POST /jobs needs it)
#   --rotate            step 1 of a rotation: new tokens for every role; memq-tokens keeps the old
#                       ones as ROLE-previous lines, so old and new both work until step 2
#   --retire-previous   step 2, once every client runs on the new tokens: removes the
#                       ROLE-previous lines from memq-tokens (nothing else changes)
#   --print             print the Secrets as YAML on stdout, touch no cluster (always new tokens)
#
# Idempotent: without --rotate a role whose Secret exists keeps its token, so running it again
# changes nothing; delete one Secret and run it again to replace that token alone. Lines of
# other names in an existing memq-tokens (tokens added by hand) are kept, and so are the
# ROLE-previous lines of a rotation until --retire-previous. --rotate refuses to run while
# ROLE-previous lines exist (a client may still hold those tokens): --retire-previous first.
# Applies with `kubectl apply --server-side` (no last-applied annotation repeating the token).
# Environment: KUBECTL (default kubectl), KUBECONFIG as kubectl reads it.
set -euo pipefail

ROLES=(reader producer consumer admin)
KUBECTL=${KUBECTL:-kubectl}
namespace=""
queues="*"
queues_given=false
rotate=false
retire=false
print=false

usage() {
    sed -n '10,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --namespace | -n) [ $# -ge 2 ] || usage; namespace=$2; shift 2 ;;
        --namespace=*) namespace=${1#*=}; shift ;;
        --queues) [ $# -ge 2 ] || usage; queues=$2; queues_given=true; shift 2 ;;
        --queues=*) queues=${1#*=}; queues_given=true; shift ;;
        --rotate) rotate=true; shift ;;
        --retire-previous) retire=true; shift ;;
        --print) print=true; shift ;;
        -h | --help) usage ;;
        *) echo "make-tokens: unknown argument $1" >&2; usage ;;
    esac
done
case $queues in
    "" | [._-]* | *[!A-Za-z0-9._*?-]*)
        echo "make-tokens: --queues '$queues': a glob of letters, digits, '.', '_', '-', '*' and '?', not starting with '.', '_' or '-'" >&2
        exit 2 ;;
esac
if $retire && { $rotate || $print || $queues_given; }; then
    echo "make-tokens: --retire-previous only removes the ROLE-previous lines from memq-tokens; it takes --namespace alone (not --rotate, --print or --queues)" >&2
    exit 2
fi

say() { printf 'make-tokens: %s\n' "$*" >&2; }

command -v "$KUBECTL" >/dev/null 2>&1 || { say "$KUBECTL not found (set KUBECTL to a kubectl)"; exit 1; }
command -v sha256sum >/dev/null 2>&1 || { say "sha256sum not found (GNU coreutils)"; exit 1; }

ns_args=()
[ -n "$namespace" ] && ns_args=(--namespace "$namespace")
# ${a[@]+...}: an empty array under `set -u` on bash before 4.4 too.
kube() { "$KUBECTL" ${ns_args[@]+"${ns_args[@]}"} "$@"; }

# The names of the previous tokens during a rotation: reader-previous, producer-previous, ...
previous_names=""
for role in "${ROLES[@]}"; do
    previous_names="$previous_names $role-previous"
done

# 32 random bytes as 64 hex digits.
new_token() {
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex 32
    else
        head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n'
        echo
    fi
}

# The token in Secret memq-token-ROLE, or nothing when there is no such Secret.
existing_token() {
    local data
    # A failed read (no permission, no API server) must stop the script, not look like "no
    # Secret yet" and replace the token.
    if ! data=$(kube get secret "memq-token-$1" --ignore-not-found -o 'jsonpath={.data.token}'); then
        echo "make-tokens: cannot read Secret memq-token-$1 (see kubectl's error above); nothing changed" >&2
        exit 1
    fi
    [ -n "$data" ] && printf '%s' "$data" | base64 -d
    return 0
}

# Tokens live in files of a private directory only: never in an argument (ps shows those),
# never on stdout unless --print asks for the Secrets.
umask 077
work=$(mktemp -d "${TMPDIR:-/tmp}/make-tokens.XXXXXX")
trap 'rm -rf "$work"' EXIT

where=${namespace:-the current namespace}
next_args=""
[ -n "$namespace" ] && next_args=" --namespace $namespace"

# The server's file as it is in the cluster ($work/current, empty when there is no memq-tokens
# yet), and its ROLE-previous lines ($work/previous).
: >"$work/current"
: >"$work/previous"
if ! $print; then
    if ! current=$(kube get secret memq-tokens --ignore-not-found -o 'jsonpath={.data.tokens}'); then
        say "cannot read Secret memq-tokens (see kubectl's error above); nothing changed"
        exit 1
    fi
    if [ -n "$current" ]; then
        printf '%s' "$current" | base64 -d >"$work/current"
    fi
    awk -v names="$previous_names" '
        BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) previous[list[i]] = 1 }
        $0 !~ /^[[:space:]]*(#|$)/ && ($1 in previous)' "$work/current" >"$work/previous"
fi
previous_count=$(grep -c . "$work/previous" || true)

if $retire; then
    say "memq-tokens in $where"
    if [ ! -s "$work/current" ]; then
        say "there is no Secret memq-tokens: nothing to retire (run the script without --retire-previous to make the Secrets)"
        exit 1
    fi
    if [ "$previous_count" -eq 0 ]; then
        say "memq-tokens holds no ROLE-previous line: nothing to retire, nothing changed"
        exit 0
    fi
    # Every other line stays as it is, comments and hand-added tokens included.
    awk -v names="$previous_names" '
        BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) previous[list[i]] = 1 }
        $0 ~ /^[[:space:]]*(#|$)/ || !($1 in previous)' "$work/current" >"$work/tokens"
else
    if $rotate && [ "$previous_count" -gt 0 ]; then
        say "memq-tokens still holds the previous tokens of the last --rotate ($(awk '{ printf "%s%s", sep, $1; sep = ", " }' "$work/previous")),"
        say "which clients may still use. Once every client runs on the current tokens, run"
        say "  scripts/make-tokens.sh$next_args --retire-previous"
        say "and --rotate again. Nothing changed."
        exit 1
    fi

    if $print; then
        say "printing new Secrets (no cluster is read or changed)"
    else
        say "Secrets in $where"
    fi

    for role in "${ROLES[@]}"; do
        token=""
        if ! $print && ! $rotate; then
            token=$(existing_token "$role")
        fi
        if [ -n "$token" ]; then
            say "memq-token-$role: kept (it exists; --rotate replaces it)"
        else
            token=$(new_token)
            if $rotate; then
                say "memq-token-$role: new token (--rotate)"
            else
                say "memq-token-$role: new token"
            fi
        fi
        printf '%s' "$token" >"$work/$role"
    done

    # --rotate: the old digests of the roles stay in force as ROLE-previous lines, with the
    # role and queues they had, until --retire-previous.
    if $rotate; then
        awk -v roles="${ROLES[*]}" '
            BEGIN { n = split(roles, list, " "); for (i = 1; i <= n; i++) role[list[i]] = 1 }
            $0 !~ /^[[:space:]]*(#|$)/ && ($1 in role) { print $1 "-previous", $2, $3, $4 }' \
            "$work/current" >"$work/previous"
        previous_count=$(grep -c . "$work/previous" || true)
    fi

    # The server's file: digests only. No date or other varying line, so that an unchanged set
    # of tokens gives the same Secret and a rerun applies no change.
    {
        echo "# memq-rs tokens: NAME ROLE QUEUES sha256:HEX (scripts/make-tokens.sh)"
        for role in "${ROLES[@]}"; do
            glob=$queues
            [ "$role" = admin ] && glob="*"
            digest=$(sha256sum <"$work/$role" | cut -d' ' -f1)
            echo "$role $role $glob sha256:$digest"
        done
        cat "$work/previous"
    } >"$work/tokens"

    # Entries of other names, added by hand: kept as they are.
    awk -v names="${ROLES[*]}$previous_names" '
        BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) ours[list[i]] = 1 }
        $0 !~ /^[[:space:]]*(#|$)/ && !($1 in ours)' "$work/current" >"$work/others"
    kept=$(grep -c . "$work/others" || true)
    cat "$work/others" >>"$work/tokens"

    summary="the 4 digests (reader, producer, consumer: '$queues'; admin: '*')"
    if [ "$previous_count" -gt 0 ]; then
        if $rotate; then
            summary="$summary and the $previous_count replaced ones as ROLE-previous lines (old and new tokens both work)"
        else
            summary="$summary, the $previous_count ROLE-previous line(s) of the last --rotate kept"
        fi
    fi
    if [ "$kept" -gt 0 ]; then
        summary="$summary, $kept line(s) of other names kept"
    fi
    say "memq-tokens: $summary"
fi

# One Secret as YAML, labelled like the manifests' objects.
secret_yaml() {
    local name=$1 key=$2 file=$3
    kube create secret generic "$name" --from-file="$key=$file" --dry-run=client -o yaml |
        "$KUBECTL" label --local -f - -o yaml \
            app.kubernetes.io/name=memq-rs app.kubernetes.io/part-of=memq-rs
}

# The server's file first: if the apply stops halfway, no client holds a token the server
# does not know.
{
    secret_yaml memq-tokens tokens "$work/tokens"
    if ! $retire; then
        for role in "${ROLES[@]}"; do
            echo "---"
            secret_yaml "memq-token-$role" token "$work/$role"
        done
    fi
} >"$work/secrets.yaml"

if $print; then
    cat "$work/secrets.yaml"
    exit 0
fi
# --force-conflicts: a Secret made by hand (kubectl create) is taken over, as --rotate means.
kube apply --server-side --field-manager=memq-make-tokens --force-conflicts -f "$work/secrets.yaml" >&2

if $retire; then
    say "done: removed $(awk '{ printf "%s%s", sep, $1; sep = ", " }' "$work/previous") from memq-tokens."
    say "Within a second of the kubelet updating the server's volume (its log: \`--tokens-file reloaded\`)"
    say "the previous tokens answer 401."
elif $rotate; then
    say "done: both the old and the new tokens work once the server has the new memq-tokens. Next:"
    say "  1. wait for the server to take it: the kubelet updates its volume within a minute or two,"
    say "     then its log says \`--tokens-file reloaded\` (or: a request with a new token answers)"
    say "  2. wait for the clients: pods that read the token from its file (MEMQ_TOKEN_FILE, the"
    say "     manifests' Jobs) take the new one when the kubelet updates their volume (their log:"
    say "     \`token file changed\`); restart any that take it from MEMQ_TOKEN, which read it at start"
    say "  3. scripts/make-tokens.sh$next_args --retire-previous    (from then on the old tokens answer 401)"
else
    say "done: the queue server reads memq-tokens within a second of the kubelet updating its volume;"
    say "pods that read their memq-token-ROLE from its file take a changed token when the kubelet"
    say "updates their volume, pods that take it from MEMQ_TOKEN at their next start"
    if [ "$previous_count" -gt 0 ]; then
        say "the previous tokens of the last --rotate still work: once the clients run on the new ones,"
        say "  scripts/make-tokens.sh$next_args --retire-previous"
    fi
fi
