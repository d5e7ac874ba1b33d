#!/usr/bin/env bash
# Makes the Secrets that the manifests under manifests/ mount (see manifests/README.md,
# "Tokens"):
#   memq-token-reader, memq-token-producer, memq-token-consumer, memq-token-admin
#       key `token`: one random token per role, for the pods (and people) of that role
#   memq-tokens
#       key `tokens`: the queue server's tokens file, one `NAME ROLE QUEUES sha256:HEX` line per
#       role: only digests, never a token
#
#   scripts/make-tokens.sh [--namespace NS] [--queues GLOB] [--rotate] [--print]
#
#   --namespace NS  the namespace of the Secrets (default: the kubeconfig's current one)
#   --queues GLOB   the queues the reader, producer and consumer tokens cover (default `*`;
#                   e.g. 'keygen*'); the admin token always covers `*` (POST /jobs needs it)
#   --rotate        new tokens for every role, replacing the ones in the cluster
#   --print         print the Secrets as YAML on stdout, touch no cluster (always new tokens)
#
# Idempotent: without --rotate a role whose Secret exists keeps its token, so running it again
# changes nothing; delete one Secret and run it again to replace that token alone. Lines of
# other names in an existing memq-tokens (tokens added by hand) are kept.
# Applies with `kubectl apply --server-side` (no last-applied annotation repeating the token).
# Environment: KUBECTL (default kubectl), KUBECONFIG as kubectl reads it.
set -euo pipefail

ROLES=(reader producer consumer admin)
KUBECTL=${KUBECTL:-kubectl}
namespace=""
queues="*"
rotate=false
print=false

usage() {
    sed -n '10,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --namespace | -n) [ $# -ge 2 ] || usage; namespace=$2; shift 2 ;;
        --namespace=*) namespace=${1#*=}; shift ;;
        --queues) [ $# -ge 2 ] || usage; queues=$2; shift 2 ;;
        --queues=*) queues=${1#*=}; shift ;;
        --rotate) rotate=true; shift ;;
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

say() { printf 'make-tokens: %s\n' "$*" >&2; }

command -v "$KUBECTL" >/dev/null 2>&1 || { say "$KUBECTL not found (set KUBECTL to a kubectl)"; exit 1; }
command -v sha256sum >/dev/null 2>&1 || { say "sha256sum not found (GNU coreutils)"; exit 1; }

ns_args=()
[ -n "$namespace" ] && ns_args=(--namespace "$namespace")
kube() { "$KUBECTL" "${ns_args[@]}" "$@"; }

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

# The server's file: digests only. No date or other varying line, so that an unchanged set of
# tokens gives the same Secret and a rerun applies no change.
{
    echo "# memq-rs tokens: NAME ROLE QUEUES sha256:HEX (scripts/make-tokens.sh)"
    for role in "${ROLES[@]}"; do
        glob=$queues
        [ "$role" = admin ] && glob="*"
        digest=$(sha256sum <"$work/$role" | cut -d' ' -f1)
        echo "$role $role $glob sha256:$digest"
    done
} >"$work/tokens"

kept=0
if ! $print; then
    old=$(kube get secret memq-tokens --ignore-not-found -o 'jsonpath={.data.tokens}')
    if [ -n "$old" ]; then
        # Entries of other names, added by hand: kept as they are.
        printf '%s' "$old" | base64 -d |
            awk '$0 !~ /^[[:space:]]*(#|$)/ && $1 != "reader" && $1 != "producer" && $1 != "consumer" && $1 != "admin"' \
                >"$work/others" || true
        kept=$(grep -c . "$work/others" || true)
        cat "$work/others" >>"$work/tokens"
    fi
fi
if [ "$kept" -gt 0 ]; then
    say "memq-tokens: the 4 digests (reader, producer, consumer: '$queues'; admin: '*') and $kept line(s) of other names kept"
else
    say "memq-tokens: the 4 digests (reader, producer, consumer: '$queues'; admin: '*')"
fi

# One Secret as YAML, labelled like the manifests' objects.
secret_yaml() {
    local name=$1 key=$2 file=$3
    kube create secret generic "$name" --from-file="$key=$file" --dry-run=client -o yaml |
        "$KUBECTL" label --local -f - -o yaml \
            app.kubernetes.io/name=memq-rs app.kubernetes.io/part-of=memq-rs
}

{
    for role in "${ROLES[@]}"; do
        secret_yaml "memq-token-$role" token "$work/$role"
        echo "---"
    done
    secret_yaml memq-tokens tokens "$work/tokens"
} >"$work/secrets.yaml"

if $print; then
    cat "$work/secrets.yaml"
    exit 0
fi
# --force-conflicts: a Secret made by hand (kubectl create) is taken over, as --rotate means.
kube apply --server-side --field-manager=memq-make-tokens --force-conflicts -f "$work/secrets.yaml" >&2
say "done: the queue server reads memq-tokens within a second of the kubelet updating its volume;"
say "pods that read a memq-token-ROLE Secret take a changed token at their next start"
