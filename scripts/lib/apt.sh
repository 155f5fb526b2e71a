# Shell functions about this machine's apt configuration, sourced by the scripts beside it.

# The first source of the machine's own apt configuration that serves the release's main
# component, as "URI|Signed-By" (deb822 files first, then the one-line format), so that a machine
# behind an internal mirror fetches source packages from the same mirror.
release_mirror() {
  local codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  awk -v want="$codename" '
    function flush() {
      if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && (" " comps " ") ~ / main /) {
        split(uris, u, " "); print u[1] "|" signed; found = 1; exit
      }
      types = suites = comps = uris = signed = ""
    }
    FNR == 1 && NR > 1 { flush() }
    /^[[:space:]]*$/ { flush(); next }
    /^Types:/      { sub(/^Types:[[:space:]]*/, "");      types = $0 }
    /^URIs:/       { sub(/^URIs:[[:space:]]*/, "");       uris = $0 }
    /^Suites:/     { sub(/^Suites:[[:space:]]*/, "");     suites = $0 }
    /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
    /^Signed-By:/  { sub(/^Signed-By:[[:space:]]*/, "");  signed = $0 }
    END { if (!found) flush(); if (!found) exit 1 }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null && return
  [ -f /etc/apt/sources.list ] || return 0
  # deb [opt=value ...] URI suite components: keep signed-by, drop the other options.
  awk -v want="$codename" '
    $1 != "deb" { next }
    {
      signed = ""
      if ($2 ~ /^\[/) {
        opts = $0; sub(/^deb[[:space:]]*\[/, "", opts); sub(/\].*/, "", opts)
        n = split(opts, o, /[[:space:]]+/)
        for (i = 1; i <= n; i++) if (o[i] ~ /^signed-by=/) { signed = o[i]; sub(/^signed-by=/, "", signed) }
        line = $0; sub(/^deb[[:space:]]*\[[^]]*\][[:space:]]*/, "", line); split(line, f, /[[:space:]]+/)
        uri = f[1]; suite = f[2]
      } else { uri = $2; suite = $3 }
      if (suite == want) { print uri "|" signed; exit }
    }
  ' /etc/apt/sources.list
}
