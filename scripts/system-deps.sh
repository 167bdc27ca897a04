#!/usr/bin/env bash
# Debian packages METEOR needs: WordNet 3.0 (NLTK's synonyms) and a Java runtime (pycocoevalcap's jar).
# Installs them when missing and we are root; otherwise says what to install.
set -euo pipefail
missing=()
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
[ -f /usr/share/wordnet/index.sense ] || missing+=(wordnet-sense-index)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (for METEOR)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "METEOR needs: sudo apt-get install ${missing[*]}  (the meteor metrics fail with this message until then)" >&2
fi
