// A Caddy binary with the Mercure hub module, used only as a benchmark peer
// (bench/run.py builds it into ${BROKER_CACHE:-~/.cache/broker}/mercure-caddy).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/dunglas/mercure/caddy"
)

func main() {
	caddycmd.Main()
}
