package testnet

import "testing"

// A member on the gateway's default listen port makes every gateway command run without
// --listen-addr refuse its endpoints: the port is never handed out.
func TestFreePortNeverHandsOutTheGatewaysDefaultPort(t *testing.T) {
	portsMu.Lock()
	defer portsMu.Unlock()
	if mayHandOut(gatewayDefaultPort) {
		t.Fatalf("port %d may be handed out", gatewayDefaultPort)
	}
	if !mayHandOut(gatewayDefaultPort + 1) {
		t.Fatalf("port %d, never handed out, may not be", gatewayDefaultPort+1)
	}
}
