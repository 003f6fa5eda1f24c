// Package resolver owns the desired endpoint set: the Endpoint value type, the parsing of
// `--endpoints`, the loop check, and the services that publish the set to the health manager
// over a latest-wins channel: a static list, or SRV discovery (miekg/dns) refreshed by TTL, with
// TLS verification of `_etcd-client-ssl` members. It imports nothing from the rest of the
// project.
package resolver
