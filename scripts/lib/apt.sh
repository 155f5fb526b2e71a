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
    /^[[:space:]]*$/ { flush(); next }
    /^Types:/      { sub(/^Types:[[:space:]]*/, "");      types = $0 }
    /^URIs:/       { sub(/^URIs:[[:space:]]*/, "");       uris = $0 }
    /^Suites:/     { sub(/^Suites:[[:space:]]*/, "");     suites = $0 }
    /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
    /^Signed-By:/  { sub(/^Signed-By:[[:space:]]*/, "");  signed = $0 }
    END { if (!found) flush(); if (!found) exit 1 }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null && return
  [ -f /etc/apt/sources.list ] || return 0
  sed -E 's/\[[^]]*\]//' /etc/apt/sources.list |
    awk -v want="$codename" '$1 == "deb" && $3 == want { print $2 "|"; exit }'
}
