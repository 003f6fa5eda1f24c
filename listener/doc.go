// Package listener owns the gateway's listening socket and every client connection. The socket
// is bound once, before the supervisor tree starts, and the Forwarder that runs the proxied
// connections outlives the accept loop: a restarted Service keeps the port and every live
// connection. The Forwarder alone keeps the per-address counters of what it forwarded, and
// their retention. The Evictor closes the connections of a member that turns unhealthy; the
// Rebalancer moves quiet connections from the most loaded healthy members to the least loaded
// when their loads drift apart. On shutdown the Forwarder drains live connections for a grace
// period and closes the rest.
package listener
