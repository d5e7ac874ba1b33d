// CoreDNS with only the plugins the test node's cluster DNS uses: the Kubernetes records of
// cluster.local (and its reverse zones) and NXDOMAIN for every other name, with no plugin that
// could forward a query off the machine. Built by scripts/node-up.sh into ~/.cache/memq-rs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

// The plugins in the order CoreDNS's own plugin.cfg runs them.
var directives = []string{"bind", "ready", "errors", "cache", "template", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
